"""Checks that turn a bad checkpoint into one clear sentence before anything is trained or written."""

from __future__ import annotations

import inspect
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

_EXAMPLE = "lightning_logs/<system>/version_N/checkpoints/last.ckpt"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU, or raise an error that says what is wrong and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"There is no checkpoint at {path}: pass the path of a .ckpt file, e.g. {_EXAMPLE}."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights_only" not in str(error).lower():
            raise _corrupt(path, error) from error
        raise ValueError(
            f"{path} holds Python objects that torch.load(weights_only=True) refuses to run: keep plain "
            "values (numbers, strings, lists, tensors) in hyper-parameters and callback states, then save "
            "it again."
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise _corrupt(path, error) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path} is not a Lightning checkpoint (it has no 'state_dict'): pass a file written by "
            "ModelCheckpoint or Trainer.save_checkpoint."
        )
    return checkpoint


def _corrupt(path: Path, error: BaseException) -> ValueError:
    return ValueError(
        f"{path} cannot be read as a checkpoint ({type(error).__name__}): it is truncated or corrupt. "
        f"Resume from another file of that run instead, e.g. last.ckpt or an epoch=N one beside it."
    )


def writer_of(checkpoint: dict[str, Any]) -> str | None:
    """The class path LightningCLI recorded for the module that wrote the checkpoint, if any."""
    return checkpoint.get("hyper_parameters", {}).get("_class_path")


def check_checkpoint_class(checkpoint: dict[str, Any], cls: type, path: str | Path) -> None:
    """Refuse a checkpoint of another LightningModule class (before its hyper-parameters are parsed)."""
    writer = writer_of(checkpoint)
    hparams = {k for k in checkpoint.get("hyper_parameters", {}) if not k.startswith("_")}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    if writer is not None and writer.rsplit(".", 1)[-1] != cls.__name__:
        raise ValueError(
            f"{path} was written by {writer}, not by {cls.__name__}: pass a checkpoint of this system, "
            f"e.g. {_EXAMPLE}."
        )
    foreign = sorted(hparams - accepted)
    if foreign:
        raise ValueError(
            f"{path} comes from another system (its hyper-parameters {', '.join(foreign[:4])} are not "
            f"{cls.__name__}'s): pass a checkpoint of this system, e.g. {_EXAMPLE}."
        )


def state_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """What keeps ``given`` weights from loading where ``expected`` ones live ("" when they fit): a few
    missing, unexpected and reshaped keys of each kind."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(given) if expected[k].shape != given[k].shape)
    return "; ".join(
        f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
        if keys
    )


def check_checkpoint_fits(checkpoint: dict[str, Any], module: nn.Module) -> None:
    """Refuse weights that do not fit ``module``, naming what differs; call it from ``on_load_checkpoint``."""
    details = state_mismatch(module.state_dict(), checkpoint["state_dict"])
    if not details:
        return
    writer = writer_of(checkpoint) or "a module with other weights"
    raise ValueError(
        f"This checkpoint was written by {writer} and its weights do not fit {type(module).__name__} "
        f"({details}): load it with the system and hyper-parameters that wrote it."
    )
