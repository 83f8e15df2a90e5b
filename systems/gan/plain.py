"""The GAN's training without Lightning: ``python -m systems.gan.plain``.

``train`` is the loop the Trainer runs for ``GAN`` (``module.py``), on the same ``model.py`` pieces: each batch
goes to the critic or the generator in 1.x's frequency order, the other network is switched off around the step
(what ``toggle_optimizer`` does), and autocast is what ``Trainer(precision=...)`` adds. The benchmarks check that
both end with the same weights. What the module adds: the decay, the grids and score, resuming, logging, devices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from systems.gan.model import critic_loss, generator_loss, is_critic_batch


def train(
    generator: nn.Module,
    critic: nn.Module,
    batches: Iterable[tuple[int, tuple[torch.Tensor, ...]]],
    *,
    device: torch.device,
    latent_dim: int,
    n_critic: int = 2,
    n_generator: int = 1,
    loss: str = "wgan-gp",
    gp_weight: float = 10.0,
    lr_generator: float = 2e-3,
    lr_discriminator: float = 5e-4,
    betas: tuple[float, float] = (0.0, 0.9),
    average: AveragedModel | None = None,
    autocast_dtype: torch.dtype | None = None,
    on_step: Callable[[], None] = lambda: None,
) -> list[torch.Tensor]:
    """Train on ``(batch_idx, batch)`` pairs, ``batch_idx`` counted within each epoch; each batch's loss.
    ``average`` (``model.averaged``), if given, follows the generator after each of its steps."""
    generator.to(device).train()
    critic.to(device).train()
    d_optimizer = torch.optim.Adam(critic.parameters(), lr=lr_discriminator, betas=betas)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=lr_generator, betas=betas)
    # float16 scales the loss so that small gradients survive; for other dtypes the scaler passes through
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    losses = []
    for batch_idx, batch in batches:
        real = batch[0].to(device, non_blocking=True)
        critic_batch = is_critic_batch(batch_idx, n_critic, n_generator)
        optimizer, other = (d_optimizer, generator) if critic_batch else (g_optimizer, critic)
        other.requires_grad_(False)  # what toggle_optimizer does: no gradient for the other network
        z = torch.randn(real.shape[0], latent_dim, device=device)
        with torch.autocast(
            device.type, autocast_dtype, enabled=autocast_dtype is not None, cache_enabled=False
        ):
            if critic_batch:
                with torch.no_grad():
                    fake = generator(z)
                batch_loss = critic_loss(critic, real, fake, loss, gp_weight)[0]
            else:
                batch_loss = generator_loss(critic, generator(z), loss)
        optimizer.zero_grad()
        scaler.scale(batch_loss).backward()
        scaler.step(optimizer)
        scaler.update()
        other.requires_grad_(True)
        if not critic_batch and average is not None:
            average.update_parameters(generator)
        losses.append(batch_loss.detach())
        on_step()
    return losses


def main(epochs: int = 20, batch_size: int = 64) -> list[torch.Tensor]:
    """Train on scikit-learn's bundled 8x8 digits in [-1, 1]; print how the critic's loss moved."""
    from sklearn.datasets import load_digits

    from systems.gan.model import Discriminator, Generator, averaged

    torch.manual_seed(42)
    images = torch.from_numpy(load_digits().images).float().unsqueeze(1) / 8.0 - 1.0
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size, shuffle=True)
    generator, critic = Generator(64, (1, 8, 8), 32, blocks=2), Discriminator((1, 8, 8), 32)
    batches = ((batch_idx, batch) for _ in range(epochs) for batch_idx, batch in enumerate(loader))
    average, cycle = averaged(generator, 0.999), {"n_critic": 2, "n_generator": 1}  # averaged: draws samples
    losses = train(
        generator, critic, batches, device=torch.device("cpu"), latent_dim=64, average=average, **cycle
    )
    critic_losses = [
        loss.item() for i, loss in enumerate(losses) if is_critic_batch(i % len(loader), **cycle)
    ]
    n = len(critic_losses) // epochs
    first, last = sum(critic_losses[:n]) / n, sum(critic_losses[-n:]) / n
    print(
        f"{len(losses)} batches; the critic's loss, mean of the first epoch {first:+.2f}, of the last {last:+.2f}"
    )
    return losses


if __name__ == "__main__":
    main()
