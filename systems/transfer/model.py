"""Plain torch: a ResNet without its classifier, its input, and what freezing does to each of its five stages."""

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
    """A randomly initialised ResNet mapping images to pooled features, and their width; ``fc`` becomes the identity,
    not cut off, so that the parameter names stay torchvision's and its weight files load as they are."""
    backbone = get_model(arch, weights=None)
    width, backbone.fc = backbone.fc.in_features, nn.Identity()
    return backbone, width


class Standardize(nn.Module):
    """Standardise each channel with the data's statistics (buffers: they live in the checkpoint), and give grey
    images the three channels a ResNet's first convolution expects."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).expand(-1, 3, -1, -1)  # RGB stays as it is


def unfreeze(backbone: ResNet, stages: int, bn_policy: BNPolicy) -> list[nn.Parameter]:
    """Make the last ``stages`` of the five trainable (1: ``layer4``, 5: all), their BatchNorm layers only under
    ``bn_policy="train"``; return the parameters that were frozen."""
    modules = [m for stage in STAGES[-stages:] for name in stage for m in getattr(backbone, name).modules()]
    kept = [m for m in modules if bn_policy == "train" or not isinstance(m, BATCH_NORMS)]
    return [p.requires_grad_(True) for m in kept for p in m.parameters(recurse=False) if not p.requires_grad]


def set_modes(backbone: ResNet, bn_policy: BNPolicy) -> None:
    """Frozen stages in eval mode, trainable ones in train mode, and BatchNorm in train mode only under
    ``bn_policy="train"``: in train mode it updates its statistics even when nothing requires grad."""
    for stage in STAGES:
        trainable = any(p.requires_grad for name in stage for p in getattr(backbone, name).parameters())
        for name in stage:
            getattr(backbone, name).train(trainable)
    for batch_norm in (m for m in backbone.modules() if isinstance(m, BATCH_NORMS)):
        batch_norm.train(bn_policy == "train")
