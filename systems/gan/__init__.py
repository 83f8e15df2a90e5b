"""GAN: two optimizers under manual optimization, stepped in Lightning 1.x's frequency order (WGAN-GP)."""

from systems.gan.module import GAN

__all__ = ["GAN"]
