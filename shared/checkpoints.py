"""Reading checkpoints and weight files safely, and writing checkpoints that are never half-written."""

from __future__ import annotations

import inspect
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from shared.errors import UserError

_EXAMPLE = "lightning_logs/<system>/version_N/checkpoints/last.ckpt"


def load_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or a ``UserError`` that says what the file is.

    ``weights_only`` never runs code from the file. Torch's own advice on a refused file (to load it with
    ``weights_only=False``, which would run that code) is never passed on.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"There is no {what} at {path}: pass the path of an existing file.")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            if file.read(4) == b"PK\x03\x04":  # begins as torch.save's zip archive, but its end is missing
                raise _corrupt(path, what)
        raise UserError(
            f"{path} is not a {what}: it is not a file that torch.save writes. Pass another file, e.g. "
            "last.ckpt or an epoch=N one of the same run."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" in str(error).lower():  # an object of a class that weights_only does not allow
            raise UserError(
                f"{path} holds Python objects besides tensors and plain values, and loading them could run "
                f"code: it was not written by this project. Save the {what} again from plain values."
            ) from None
        raise _corrupt(path, what) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError):
        raise _corrupt(path, what) from None


def _corrupt(path: Path, what: str) -> UserError:
    return UserError(
        f"{path} cannot be read as a {what}: it is truncated or corrupt. Use another file, e.g. last.ckpt or "
        "an epoch=N one of the same run."
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint loaded on the CPU, or a ``UserError`` that says what is wrong and what to do."""
    checkpoint = load_file(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(
            f"{path} is not a Lightning checkpoint (it has no 'state_dict'): pass a file written by "
            f"ModelCheckpoint or Trainer.save_checkpoint, e.g. {_EXAMPLE}."
        )
    return checkpoint


def check_checkpoint_class(checkpoint: dict[str, Any], cls: type, path: str | Path) -> None:
    """Refuse a checkpoint of another LightningModule class (before its hyper-parameters are parsed)."""
    hparams = {k for k in checkpoint.get("hyper_parameters", {}) if not k.startswith("_")}
    foreign = sorted(hparams - set(inspect.signature(cls.__init__).parameters))
    if foreign:
        raise UserError(
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


class WholeFileCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside its target, then rename it into place.

    A write that fails (a full disk, a read-only folder) leaves no truncated file under a checkpoint's
    name, and the file it would have replaced (``last.ckpt`` of the epoch before) stays whole. The error
    names the checkpoint that could not be written.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise OSError(error.errno, error.strerror, str(path)) from None
