"""Plain torch: a DCGAN-style generator and critic sized from the image shape, the WGAN-GP losses, 1.x's step order."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel


def is_critic_batch(batch_idx: int, n_critic: int, n_generator: int) -> bool:
    """Lightning 1.x's ``frequency`` order: of each cycle of ``n_critic + n_generator`` batches (counted within the
    epoch, so the cycle restarts with each one) the first ``n_critic`` go to the critic, the rest to the generator."""
    return batch_idx % (n_critic + n_generator) < n_critic


def upsampling_plan(side: int) -> tuple[int, int]:
    """``(start_side, doublings)``: halve ``side`` while it stays an integer of at least 4 (8 px: 4 and one
    doubling; 28 px: 7 and two; 32 px: 4 and three). Each doubling is one stride-2 layer in either net."""
    start, doublings = side, 0
    while start % 2 == 0 and start // 2 >= 4:
        start, doublings = start // 2, doublings + 1
    return start, doublings


class Generator(nn.Module):
    """Latent vector -> image in [-1, 1]: a linear layer to ``start x start`` maps, one ``ConvTranspose2d`` (BatchNorm,
    ReLU) per doubling that halves the channels (DCGAN), ``blocks`` 3x3 convolution blocks at full size, ``tanh``."""

    def __init__(
        self, latent_dim: int, image_shape: tuple[int, int, int], width: int = 64, blocks: int = 0
    ) -> None:
        super().__init__()
        channels, _, side = image_shape
        self.start, doublings = upsampling_plan(side)
        self.start_channels = c = width * 2**doublings
        n = c * self.start**2
        self.project = nn.Sequential(nn.Linear(latent_dim, n, bias=False), nn.BatchNorm1d(n), nn.ReLU(True))
        layers: list[nn.Module] = []
        for _ in range(doublings):
            c //= 2
            layers += [nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        for _ in range(blocks):
            layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        self.body = nn.Sequential(*layers, nn.Conv2d(c, channels, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(-1, self.start_channels, self.start, self.start))


class Discriminator(nn.Module):
    """Image -> one unbounded score: the generator's mirror, one stride-2 ``Conv2d`` per doubling that doubles the
    channels. No BatchNorm: the gradient penalty is per sample, and batch statistics would mix the samples."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        channels, _, side = image_shape
        start, doublings = upsampling_plan(side)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2, True)]
        for i in range(doublings):
            layers += [nn.Conv2d(width * 2**i, width * 2 ** (i + 1), 4, 2, 1), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.score = nn.Linear(width * 2**doublings * start**2, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(images)).squeeze(1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``E[(|grad_x D(x)| - 1)^2]`` at random points between real and fake images (WGAN-GP), in fp32: under fp16
    autocast the inner gradients can underflow or overflow (a GradScaler scales the loss, not them)."""
    with torch.autocast(device_type=real.device.type, enabled=False):
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
        points = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
        # critic.forward, not critic(): eager even where the critic is compiled, for a compiled graph has no
        # double backward
        (grads,) = torch.autograd.grad(critic.forward(points).sum(), points, create_graph=True)
        # the small constant keeps the norm's gradient finite where an input gradient is exactly zero
        return ((grads.flatten(1).square().sum(1) + 1e-12).sqrt() - 1).square().mean()


def critic_loss(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, loss: str = "wgan-gp", gp_weight: float = 10.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The critic's loss on real and (detached) fake images, and its parts: WGAN-GP's ``D(fake) - D(real) + gp_weight *
    penalty``, or the BCE loss of a classifier of real against fake."""
    real_scores, fake_scores = critic(real), critic(fake)
    if loss == "bce":
        bce = F.binary_cross_entropy_with_logits
        ones, zeros = torch.ones_like(real_scores), torch.zeros_like(fake_scores)
        return bce(real_scores, ones) + bce(fake_scores, zeros), {}
    penalty = gradient_penalty(critic, real, fake)
    parts = {"gp": penalty, "wasserstein": real_scores.mean() - fake_scores.mean()}
    return fake_scores.mean() - real_scores.mean() + gp_weight * penalty, parts


def generator_loss(critic: nn.Module, fake: torch.Tensor, loss: str = "wgan-gp") -> torch.Tensor:
    """``-D(G(z))``, or the non-saturating ``-log D(G(z))`` of the BCE loss."""
    scores = critic(fake)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))
    return -scores.mean()


def averaged(generator: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``generator``'s weights and BatchNorm statistics (as StyleGAN's, it draws
    cleaner samples than the last weights); call ``update_parameters(generator)`` after every generator step. The
    decay rises as ``(1 + n) / (10 + n)`` until ``decay``, so a short run's average leaves the initial weights."""

    def moved(means: list[torch.Tensor], nows: list[torch.Tensor], n: torch.Tensor) -> None:
        weight = 1 - ((1 + n) / (10 + n)).clamp(max=decay)  # a tensor: no wait for the GPU
        for mean, now in zip(means, nows, strict=True):  # the tensors come detached
            mean.lerp_(now, weight.to(mean.dtype)) if mean.is_floating_point() else mean.copy_(now)

    return AveragedModel(generator, multi_avg_fn=moved, use_buffers=True).requires_grad_(False)
