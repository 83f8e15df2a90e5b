"""The backbone's starting weights, read once when ``fit`` starts (``TransferLearner.prepare_data`` and
``on_fit_start``), never by ``load_from_checkpoint``: a checkpoint carries its own.

``weights`` is a torchvision weight name of the ResNet (``IMAGENET1K_V1``, ``DEFAULT``), read from the torch
hub cache and downloaded there when missing, with every connection bounded in time so that offline it fails
at once naming the file to copy; or a file: the ``backbone.pt`` that ``pretrain`` exports, a checkpoint of
this system, or a whole torchvision ResNet ``state_dict``. Nothing is copied unless every tensor fits.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model_weights

from shared.checkpoints import load_file, state_mismatch
from shared.downloads import fetch_or_explain
from shared.errors import UserError, require

# Where `pretrain` exports its backbone (ExportBackbone's path) and where `train` reads it from (the default
# of TransferLearner's `weights`); neither yaml file repeats it.
PRETRAINED_BACKBONE = "lightning_logs/transfer/pretrain/backbone.pt"
# Seconds a download of torchvision weights may stall before it is given up (offline: fail, do not hang).
DOWNLOAD_TIMEOUT_S = 20.0
# How torchvision spells weight names (IMAGENET1K_V1, DEFAULT); anything else is taken as a file path.
_WEIGHT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def is_weight_name(weights: str) -> bool:
    """Whether ``weights`` is spelt like a torchvision weight name rather than a file path."""
    return _WEIGHT_NAME.fullmatch(weights) is not None


def weight_names(arch: str) -> list[str]:
    """The torchvision weight names of ``arch``, and ``DEFAULT`` (the best of them)."""
    return [w.name for w in get_model_weights(arch)] + ["DEFAULT"]


def cached_file(weights: WeightsEnum) -> Path:
    """Where ``torch.hub`` keeps the file of torchvision ``weights`` (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def weight_file(arch: str, weights: str) -> Path:
    """The file that ``weights`` names, checked: a file that exists, or the hub cache's file of a torchvision
    name, downloaded there if missing (``prepare_data`` does it once per machine, before ``fit`` writes)."""
    if not is_weight_name(weights):
        require(
            Path(weights).is_file(),
            f"There is no weight file at {weights}: run `python -m systems.transfer.pretrain` first (it "
            f"writes {PRETRAINED_BACKBONE}), or pass --model.weights=PATH or a torchvision weight name such "
            "as IMAGENET1K_V1.",
        )
        return Path(weights)
    torchvision = get_model_weights(arch)[weights]
    file = cached_file(torchvision)
    if not file.is_file():
        fetch_or_explain(
            lambda: torch.hub.load_state_dict_from_url(torchvision.url, progress=False, check_hash=True),
            lambda reason: UserError(
                f"The torchvision weights {torchvision} are not in {file} and {reason}: copy that file there "
                "from a machine that has it, or pass a local weight file with --model.weights=PATH "
                "(python -m systems.transfer.pretrain writes one)."
            ),
            file.parent,
            DOWNLOAD_TIMEOUT_S,
        )
    return file


def backbone_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's part of this system's ``state_dict`` (a module's or a checkpoint's), keyed as the
    backbone's own: the one place the ``backbone.`` prefix is stripped."""
    return {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}


def read_backbone_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone weights in a file: the ones ``pretrain`` exports, a Lightning checkpoint of this system,
    or a whole torchvision ResNet ``state_dict`` (whose classifier ``fc.*`` is dropped)."""
    content = load_file(path, what="weight file")
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = backbone_state(content["state_dict"])
    require(
        isinstance(content, dict) and all(isinstance(v, torch.Tensor) for v in content.values()),
        f"{path} holds no state_dict of tensors: pass a backbone or ResNet state_dict file.",
    )
    state = {k: v for k, v in content.items() if not k.startswith("fc.")}
    require(bool(state), f"{path} holds no backbone weights: pass a backbone or ResNet state_dict file.")
    return state


def load_weights(backbone: nn.Module, arch: str, weights: str) -> None:
    """Copy the starting weights that ``weights`` names into ``backbone``, or say what does not fit (often
    the ``arch``) and change nothing."""
    state = read_backbone_state(weight_file(arch, weights))
    details = state_mismatch(backbone.state_dict(), state)
    require(
        not details,
        f"The weights in {weights} do not fit a {arch} backbone ({details}): set model.arch to the ResNet "
        "that wrote them.",
    )
    backbone.load_state_dict(state)
