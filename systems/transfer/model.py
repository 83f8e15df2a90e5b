"""Plain torch: a torchvision ResNet without its classifier, the input it expects, and its weight files."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet, WeightsEnum, get_model, get_model_weights

from shared.checkpoints import load_file, state_mismatch
from shared.errors import UserError

ARCHITECTURES = ("resnet18", "resnet34", "resnet50")
# The five stages a ResNet backbone is frozen and unfrozen by, from the input on: the stem, then layer1-4.
STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
# How torchvision spells weight names (IMAGENET1K_V1, DEFAULT); anything else is taken as a file path.
_WEIGHT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


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


def is_weight_name(weights: str) -> bool:
    """Whether ``weights`` is spelt like a torchvision weight name rather than a file path."""
    return _WEIGHT_NAME.fullmatch(weights) is not None


def torchvision_weights(arch: str, name: str) -> WeightsEnum:
    """The torchvision weights called ``name`` for ``arch`` (``DEFAULT`` is the best available)."""
    available = get_model_weights(arch)
    names = [w.name for w in available]
    if name != "DEFAULT" and name not in names:
        raise UserError(
            f"{arch} has no torchvision weights called {name}: use one of {', '.join(names)} or DEFAULT, "
            "or the path of a weight file."
        )
    return available[name]


def cached_file(weights: WeightsEnum) -> Path:
    """Where ``torch.hub`` keeps the file of torchvision ``weights`` (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def read_backbone_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone weights in a file: the ones ``pretrain`` exports, a Lightning checkpoint of this system,
    or a whole torchvision ResNet ``state_dict`` (whose classifier ``fc.*`` is dropped)."""
    content = load_file(path, what="weight file")
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        prefix = "backbone."
        content = {
            k.removeprefix(prefix): v for k, v in content["state_dict"].items() if k.startswith(prefix)
        }
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise UserError(f"{path} holds no state_dict of tensors: pass a backbone or ResNet state_dict file.")
    state = {k: v for k, v in content.items() if not k.startswith("fc.")}
    if not state:
        raise UserError(f"{path} holds no backbone weights: pass a backbone or ResNet state_dict file.")
    return state


def load_backbone_state(backbone: ResNet, state: dict[str, torch.Tensor], source: str, arch: str) -> None:
    """Copy ``state`` into ``backbone``, or say what does not fit (often the ``arch``) and change nothing."""
    details = state_mismatch(backbone.state_dict(), state)
    if details:
        raise UserError(
            f"The weights in {source} do not fit a {arch} backbone ({details}): set model.arch to the ResNet "
            "that wrote them."
        )
    backbone.load_state_dict(state)
