"""Plain torch: a torchvision ResNet without its classifier, the input it expects, and what freezing it means
for each of its five stages (which ones train, which mode each runs in)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models import ResNet, get_model

Arch = Literal["resnet18", "resnet34", "resnet50"]
# frozen: BatchNorm keeps its pretrained statistics and weights; train: both adapt to the target data
BatchNormPolicy = Literal["frozen", "train"]
# The five stages a ResNet backbone is frozen and unfrozen by, from the input on: the stem, then layer1-4.
STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


def build_backbone(arch: Arch) -> tuple[ResNet, int]:
    """A randomly initialised torchvision ResNet that maps images to pooled features, and its feature width.

    The classifier ``fc`` becomes the identity rather than being cut off with ``children()[:-1]``: the
    parameter names stay torchvision's (``conv1.weight``, ``layer4.1.bn2.bias``...), so torchvision's own
    weight files load as they are, and the width is read from ``fc.in_features`` (512 for ResNet-18/34,
    2048 for ResNet-50) instead of being typed for one architecture.
    """
    backbone = get_model(arch, weights=None)
    width = backbone.fc.in_features
    backbone.fc = nn.Identity()
    return backbone, width


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


def unfreeze(backbone: ResNet, stages: int, bn_policy: BatchNormPolicy) -> list[nn.Parameter]:
    """Make the last ``stages`` of the five trainable (1: ``layer4``, 5: all) and return the parameters that
    were frozen. Under ``bn_policy="frozen"`` their BatchNorm layers stay frozen (weights and statistics)."""
    joined = []
    for stage in STAGES[len(STAGES) - stages :]:
        for module in (m for name in stage for m in getattr(backbone, name).modules()):
            if isinstance(module, _BatchNorm) and bn_policy == "frozen":
                continue
            for param in module.parameters(recurse=False):
                if not param.requires_grad:
                    param.requires_grad_(True)
                    joined.append(param)
    return joined


def set_modes(backbone: ResNet, bn_policy: BatchNormPolicy) -> None:
    """Frozen stages in eval mode, trainable ones in train mode, every BatchNorm layer in train mode only
    under ``bn_policy="train"``: BatchNorm in train mode updates its running statistics even when nothing
    requires grad, so a frozen backbone left in train mode drifts."""
    for stage in STAGES:
        modules = [getattr(backbone, name) for name in stage]
        trainable = any(p.requires_grad for module in modules for p in module.parameters())
        for module in modules:
            module.train(trainable)
    for module in backbone.modules():
        if isinstance(module, _BatchNorm):
            module.train(bn_policy == "train")
