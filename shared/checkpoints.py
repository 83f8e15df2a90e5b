"""Whole checkpoint files: never half-written, and read without running code from them."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from shared.errors import UserError, require

EXAMPLE = "lightning_logs/<system>/version_N/checkpoints/last.ckpt"


class WholeFileCheckpointIO(TorchCheckpointIO):
    """Each checkpoint written to a temporary file beside its target, then renamed into place: a failed write (a
    full disk) leaves no truncated file under a checkpoint's name, and the file it would replace stays whole.
    ``Trainer(plugins=[WholeFileCheckpointIO()])``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path, partial = Path(path), Path(path).with_name(f".{Path(path).name}.partial")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise OSError(error.errno, error.strerror, str(path)) from None

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Every checkpoint Lightning loads (a resume's, the best one for a test) through the safe loader."""
        return read_checkpoint(path)


def load_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or one sentence that says what the file is. Torch's advice
    to load a refused file without ``weights_only`` (which would run its code) is never passed on."""
    require(Path(path).is_file(), f"There is no {what} at {path}: pass the path of an existing file.")
    others = ", ".join(sorted(p.name for p in Path(path).parent.glob("*.ckpt") if p.name != Path(path).name))
    instead = f"its folder holds: {others or 'none'}" if Path(path).name == "last.ckpt" else "e.g. last.ckpt"
    corrupt = UserError(
        f"{path} cannot be read as a {what}: it is truncated or corrupt. Use another file ({instead})."
    )
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:  # begins as torch.save's zip archive, but its end is missing?
            require(file.read(4) != b"PK\x03\x04", str(corrupt))
        raise UserError(
            f"{path} is not a {what}: it is not a file that torch.save writes. Pass another file."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        require(
            "global" not in str(error).lower(),  # an object of a class that weights_only does not allow
            f"{path} holds Python objects besides tensors and plain values, and loading them could run code: it "
            f"was not written by this project. Save the {what} again from plain values.",
        )
        raise corrupt from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError):
        raise corrupt from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint loaded on the CPU, or one sentence that says what is wrong."""
    checkpoint = load_file(path)
    require(
        isinstance(checkpoint, dict) and "state_dict" in checkpoint,
        f"{path} is not a Lightning checkpoint (it has no 'state_dict'): pass a file written by ModelCheckpoint "
        f"or Trainer.save_checkpoint, e.g. {EXAMPLE}.",
    )
    return checkpoint


def state_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """What keeps ``given`` weights from loading where ``expected`` ones live; "" when they fit."""
    kinds = {"missing": set(expected) - set(given), "unexpected": set(given) - set(expected)}
    kinds["other shape"] = {k for k in set(expected) & set(given) if expected[k].shape != given[k].shape}
    cut = {label: sorted(keys) for label, keys in kinds.items() if keys}
    return "; ".join(f"{label}: {', '.join(k[:3])}{' ...' if len(k) > 3 else ''}" for label, k in cut.items())
