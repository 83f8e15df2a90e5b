"""Plain torch: a small CNN and two ways for a submodule to hold constant tensors safely."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TypeAsNormalize(nn.Module):
    """Standardise each channel with constants made inside ``forward`` from the input (the guide's
    ``RDNFuse`` case).

    A tensor made in ``__init__`` and kept as a plain attribute stays on the CPU in fp32 whatever the
    Trainer does: ``.to(device)`` and the precision plugin only move parameters and buffers. Making the
    constants in ``forward`` with ``type_as(x)`` gives them the input's device and dtype at every call
    (float64 under ``precision="64-true"``, bf16 for bf16 inputs, CUDA on a GPU). They are not in the
    ``state_dict``; the price is one tiny host-to-device copy per call.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).type_as(x).view(1, -1, 1, 1)
        std = torch.tensor(self.std).type_as(x).view(1, -1, 1, 1)
        return (x - mean) / std


class BufferNormalize(nn.Module):
    """The same standardisation with the constants registered as buffers.

    Buffers follow ``.to(device)`` and ``.double()``/``.half()`` with the module and are saved in the
    ``state_dict`` (so a checkpoint carries the statistics). They do not follow the input: under
    autocast a buffer keeps its own dtype. Prefer a buffer for state that belongs to the model; prefer
    ``type_as`` for constants that must match whatever tensor arrives.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvNet(nn.Module):
    """Four 3x3 conv blocks, one max-pool and a global average pool: any input size of 4 px or more."""

    def __init__(
        self, normalize: nn.Module, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = nn.Sequential(
            _conv_block(in_channels, width),
            _conv_block(width, width),
            nn.MaxPool2d(2),
            _conv_block(width, 2 * width),
            _conv_block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))
