"""The backbone's starting weights, read once when ``fit`` starts (``TransferLearner.prepare_data``, ``on_fit_start``),
never by ``load_from_checkpoint``: a checkpoint carries its own. ``weights`` is a torchvision weight name of the
ResNet (``IMAGENET1K_V1``, ``DEFAULT``), read from the torch hub cache and downloaded there when missing, every
connection bounded in time so that offline it fails at once naming the file to copy; or a file: the ``backbone.pt``
``pretrain`` exports, a checkpoint of this system, or a torchvision ResNet ``state_dict``."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model_weights

from shared.checkpoints import load_file, state_mismatch
from shared.downloads import fetch_or_explain
from shared.errors import UserError, require

# where `pretrain` exports its backbone and `train` reads it from (TransferLearner's `weights` default)
PRETRAINED_BACKBONE = "lightning_logs/transfer/pretrain/backbone.pt"
DOWNLOAD_TIMEOUT_S = 20.0  # a download that stalls this long is given up: offline, fail, do not hang


def is_weight_name(weights: str) -> bool:
    """Whether ``weights`` is spelt as torchvision spells weight names (``IMAGENET1K_V1``), not as a path."""
    return re.fullmatch(r"[A-Z][A-Z0-9_]*", weights) is not None


def check_name(arch: str, weights: str | None) -> None:
    """Refuse a torchvision weight name that ``arch`` does not have (a path is checked when it is read)."""
    names = [w.name for w in get_model_weights(arch)] + ["DEFAULT"]
    named = weights is None or not is_weight_name(weights) or weights in names
    require(named, f"{arch} has no weights called {weights}: use one of {', '.join(names)}, or a file.")


def cached_file(arch: str, name: str) -> Path:
    """Where ``torch.hub`` keeps the file of torchvision's weights ``name`` of ``arch``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(get_model_weights(arch)[name].url).name


def weight_file(arch: str, weights: str) -> Path:
    """The file ``weights`` names, checked: one that exists, or the hub cache's, downloaded there if missing."""
    if not is_weight_name(weights):
        require(
            Path(weights).is_file(),
            f"There is no weight file at {weights}: run `python -m systems.transfer.pretrain` first (it writes "
            f"{PRETRAINED_BACKBONE}), or pass --model.weights=PATH or a torchvision weight name such as IMAGENET1K_V1.",
        )
        return Path(weights)
    url, file = get_model_weights(arch)[weights].url, cached_file(arch, weights)
    if not file.is_file():
        fetch_or_explain(
            lambda: torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True),
            lambda reason: UserError(
                f"The torchvision weights {arch} {weights} are not in {file} and {reason}: copy that file there from "
                "a machine that has it, or pass a local file with --model.weights=PATH (pretrain writes one)."
            ),
            file.parent,
            DOWNLOAD_TIMEOUT_S,
        )
    return file


def backbone_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's part of this system's ``state_dict``, keyed as the backbone's own."""
    return {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}


def read_backbone_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone weights in a file ``pretrain`` exported, a checkpoint of this system, or a ResNet ``state_dict``
    (whose classifier ``fc.*`` is dropped)."""
    content = load_file(path, what="weight file")
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = backbone_state(content["state_dict"])
    tensors = isinstance(content, dict) and all(isinstance(v, torch.Tensor) for v in content.values())
    state = {k: v for k, v in content.items() if not k.startswith("fc.")} if tensors else {}
    require(bool(state), f"{path} holds no backbone weights: pass a backbone or ResNet state_dict file.")
    return state


def load_weights(backbone: nn.Module, arch: str, weights: str) -> None:
    """Copy the weights ``weights`` names into ``backbone``, or say what does not fit (often the ``arch``)."""
    state = read_backbone_state(weight_file(arch, weights))
    details = state_mismatch(backbone.state_dict(), state)
    require(
        not details,
        f"The weights in {weights} do not fit a {arch} backbone ({details}): set model.arch to the ResNet that wrote them.",
    )
    backbone.load_state_dict(state)
