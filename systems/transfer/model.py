"""Plain torch: a torchvision ResNet without its classifier, and the input it expects."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import ResNet, get_model

ARCHITECTURES = ("resnet18", "resnet34", "resnet50")
# The five stages a ResNet backbone is frozen and unfrozen by, from the input on: the stem, then layer1-4.
STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


def build_backbone(arch: str) -> tuple[ResNet, int]:
    """A randomly initialised torchvision ResNet that maps images to pooled features, and its feature width.

    The classifier ``fc`` becomes the identity rather than being cut off with ``children()[:-1]``: the
    parameter names stay torchvision's (``conv1.weight``, ``layer4.1.bn2.bias``...), so torchvision's own
    weight files load as they are, and the width is read from ``fc.in_features`` (512 for ResNet-18/34,
    2048 for ResNet-50) instead of being typed for one architecture.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}.")
    backbone = get_model(arch, weights=None)
    width = backbone.fc.in_features
    backbone.fc = nn.Identity()
    return backbone, width


def last_stages(backbone: ResNet, count: int) -> list[nn.Module]:
    """The modules of the last ``count`` of the five stages (1: layer4; 5: the whole backbone)."""
    if not 1 <= count <= len(STAGES):
        raise ValueError(f"count must be 1 to {len(STAGES)} (1: layer4 only, 5: all), got {count}.")
    return [getattr(backbone, name) for stage in STAGES[len(STAGES) - count :] for name in stage]


class Standardize(nn.Module):
    """Standardise each channel with the data set's statistics and give grey images the three channels that a
    ResNet's first convolution (and any weights made for it) expects.

    The statistics are buffers: they follow the module to any device and dtype and live in its checkpoint.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
