"""The backbone's starting weights, read when ``fit`` starts, never by ``load_from_checkpoint`` (a checkpoint has its
own): a torchvision weight name (``IMAGENET1K_V1``) from the hub cache or downloaded there, offline failing at once
naming the file to copy; or a file: pretrain's ``backbone.pt``, a checkpoint of this system, a ResNet state_dict."""

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
WEIGHT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")  # torchvision spells weight names so (IMAGENET1K_V1), not paths


def cached_file(arch: str, name: str) -> Path:
    """Where ``torch.hub`` keeps the file of torchvision's weights ``name`` of ``arch``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(get_model_weights(arch)[name].url).name


def weight_file(arch: str, weights: str) -> Path:
    """The file ``weights`` names, checked: one that exists, or the hub cache's, downloaded there if missing."""
    if not WEIGHT_NAME.fullmatch(weights):
        require(
            Path(weights).is_file(),
            f"There is no weight file at {weights}: run `python -m systems.transfer.pretrain` first (it writes "
            f"{PRETRAINED_BACKBONE}), or pass --model.weights=PATH or a torchvision weight name such as IMAGENET1K_V1.",
        )
        return Path(weights)
    if not (file := cached_file(arch, weights)).is_file():
        fetch_or_explain(
            lambda: get_model_weights(arch)[weights].get_state_dict(progress=False, check_hash=True),
            lambda reason: UserError(
                f"The torchvision weights {arch} {weights} are not in {file} and {reason}: copy that file there from "
                "a machine that has it, or pass a local file with --model.weights=PATH (pretrain writes one)."
            ),
            file.parent,
            DOWNLOAD_TIMEOUT_S,
        )
    return file


def read_backbone_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone weights in a file ``pretrain`` exported, a checkpoint of this system, or a ResNet ``state_dict``
    (whose classifier ``fc.*`` is dropped)."""
    content = load_file(path, what="weight file")
    if isinstance(content, dict) and isinstance(checkpoint := content.get("state_dict"), dict):
        content = {k.removeprefix("backbone."): v for k, v in checkpoint.items() if k.startswith("backbone.")}
    tensors = isinstance(content, dict) and all(isinstance(v, torch.Tensor) for v in content.values())
    state = {k: v for k, v in content.items() if not k.startswith("fc.")} if tensors else {}
    require(bool(state), f"{path} holds no backbone weights: pass a backbone or ResNet state_dict file.")
    return state


def load_weights(backbone: nn.Module, arch: str, weights: str) -> None:
    """Copy the weights ``weights`` names into ``backbone``, or say what does not fit (often the ``arch``)."""
    state = read_backbone_state(weight_file(arch, weights))
    details = state_mismatch(backbone.state_dict(), state)
    fix = "set model.arch to the ResNet that wrote them"
    require(not details, f"The weights in {weights} do not fit a {arch} backbone ({details}): {fix}.")
    backbone.load_state_dict(state)
