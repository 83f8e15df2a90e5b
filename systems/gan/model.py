"""Plain torch: a DCGAN-style generator and critic, both sized from the image shape."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def upsampling_plan(side: int) -> tuple[int, int]:
    """``(start_side, doublings)``: halve ``side`` while it stays an integer of at least 4.

    8 px starts at 4 and doubles once; 28 px starts at 7 and doubles twice; 32 px starts at 4 and doubles
    three times. Each doubling is one stride-2 layer in the generator and one in the critic.
    """
    if side < 4:
        raise ValueError(f"images must be at least 4 px wide, got {side} px: use a larger data.image_size.")
    start, doublings = side, 0
    while start % 2 == 0 and start // 2 >= 4:
        start, doublings = start // 2, doublings + 1
    return start, doublings


class Generator(nn.Module):
    """Latent vector -> image in [-1, 1]: a linear layer to ``start x start`` maps, then one
    ``ConvTranspose2d(4, stride 2)`` with BatchNorm and ReLU per doubling, halving the channels each time
    (DCGAN); then ``blocks`` 3x3 Conv-BatchNorm-ReLU blocks at full resolution, and a 3x3 convolution to
    the image channels with ``tanh``.
    """

    def __init__(
        self, latent_dim: int, image_shape: tuple[int, int, int], width: int = 64, blocks: int = 0
    ) -> None:
        super().__init__()
        channels, height, side = image_shape
        if height != side:
            raise ValueError(f"images must be square, got {height}x{side}: set data.image_size.")
        self.start, doublings = upsampling_plan(side)
        self.start_channels = width * 2**doublings
        self.project = nn.Sequential(
            nn.Linear(latent_dim, self.start_channels * self.start**2, bias=False),
            nn.BatchNorm1d(self.start_channels * self.start**2),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        in_channels = self.start_channels
        for _ in range(doublings):
            layers += [
                nn.ConvTranspose2d(in_channels, in_channels // 2, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(in_channels // 2),
                nn.ReLU(inplace=True),
            ]
            in_channels //= 2
        for _ in range(blocks):
            layers += [
                nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        maps = self.project(z).view(-1, self.start_channels, self.start, self.start)
        return self.body(maps)


class Discriminator(nn.Module):
    """Image -> one unbounded score (a WGAN critic, or the logit of "real" for the BCE loss).

    The mirror of the generator: a 3x3 convolution, one ``Conv2d(4, stride 2)`` per doubling that doubles
    the channels, then a linear layer. No BatchNorm: the gradient penalty is defined per sample, and
    batch statistics would mix the samples of a batch (the WGAN-GP paper drops it for that reason).
    """

    def __init__(self, image_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        channels, _, side = image_shape
        start, doublings = upsampling_plan(side)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        in_channels = width
        for _ in range(doublings):
            layers += [
                nn.Conv2d(in_channels, in_channels * 2, 4, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_channels *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.score = nn.Linear(in_channels * start**2, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(images)).squeeze(1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``E[(|grad_x D(x)| - 1)^2]`` at random points between real and fake images (WGAN-GP), in fp32.

    Autocast is switched off here: under fp16 autocast the critic's input gradients can underflow to 0 or
    overflow fp16's 65504 (a GradScaler scales the loss, not this inner ``autograd.grad``), and the double
    backward through them doubles the risk. The other critic passes still run in mixed precision.
    """
    with torch.autocast(device_type=real.device.type, enabled=False):
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
        points = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
        (grads,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
        # the small constant keeps the norm's gradient finite where an input gradient is exactly zero
        norms = (grads.flatten(1).square().sum(1) + 1e-12).sqrt()
        return (norms - 1).square().mean()


def averaged(generator: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``generator``'s weights and BatchNorm statistics, the generator that
    draws the samples (as in StyleGAN and BigGAN: the average of a GAN's late weights makes cleaner images than
    the last ones). Call ``update_parameters(generator)`` after every generator step. The decay rises as
    ``(1 + n) / (10 + n)`` after ``n`` updates until it reaches ``decay``, so the average does not sit on the
    initial weights while a run is short. No gradient: no optimizer owns these weights."""

    @torch.no_grad()
    def moved(averages: list[torch.Tensor], currents: list[torch.Tensor], n: torch.Tensor) -> None:
        weight = 1 - ((1 + n) / (10 + n)).clamp(max=decay)  # a tensor: no wait for the GPU
        for average, current in zip(averages, currents, strict=True):
            if average.is_floating_point():
                average.lerp_(current, weight.to(average.dtype))
            else:  # BatchNorm's batch counter
                average.copy_(current)

    return AveragedModel(generator, multi_avg_fn=moved, use_buffers=True).requires_grad_(False)
