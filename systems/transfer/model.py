"""Plain torch: a torchvision ResNet without its classifier, the input it expects, and what freezing means for each
of its five stages (which ones train, which mode each runs in)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torchvision.models import ResNet, get_model

Arch = Literal["resnet18", "resnet34", "resnet50"]
# frozen: BatchNorm keeps its pretrained statistics and weights; train: both adapt to the target data
BNPolicy = Literal["frozen", "train"]
# the five stages a ResNet backbone is frozen and unfrozen by, from the input on: the stem, then layer1-4
STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def build_backbone(arch: Arch) -> tuple[ResNet, int]:
    """A randomly initialised torchvision ResNet that maps images to pooled features, and its feature width. The
    classifier ``fc`` becomes the identity rather than being cut off: the parameter names stay torchvision's, so
    its weight files load as they are, and the width is read (512 for ResNet-18/34, 2048 for ResNet-50)."""
    backbone = get_model(arch, weights=None)
    width, backbone.fc = backbone.fc.in_features, nn.Identity()
    return backbone, width


class Standardize(nn.Module):
    """Standardise each channel with the data's statistics (buffers: they follow the module and live in its
    checkpoint), and give grey images the three channels a ResNet's first convolution expects."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def unfreeze(backbone: ResNet, stages: int, bn_policy: BNPolicy) -> list[nn.Parameter]:
    """Make the last ``stages`` of the five trainable (1: ``layer4``, 5: all); the parameters that were frozen.
    Under ``bn_policy="frozen"`` their BatchNorm layers stay frozen (weights and statistics)."""
    modules = [
        m
        for stage in STAGES[len(STAGES) - stages :]
        for name in stage
        for m in getattr(backbone, name).modules()
    ]
    keep = (lambda m: isinstance(m, BATCH_NORMS)) if bn_policy == "frozen" else (lambda m: False)
    joined = [p for m in modules if not keep(m) for p in m.parameters(recurse=False) if not p.requires_grad]
    return [p.requires_grad_(True) for p in joined]


def set_modes(backbone: ResNet, bn_policy: BNPolicy) -> None:
    """Frozen stages in eval mode, trainable ones in train mode, and BatchNorm in train mode only under
    ``bn_policy="train"``: in train mode it updates its statistics even when nothing requires grad."""
    for stage in STAGES:
        modules = [getattr(backbone, name) for name in stage]
        trainable = any(p.requires_grad for module in modules for p in module.parameters())
        for module in modules:
            module.train(trainable)
    for module in backbone.modules():
        if isinstance(module, BATCH_NORMS):
            module.train(bn_policy == "train")
