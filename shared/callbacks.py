"""Callbacks every system gets from the shared CLI; none of them depends on a particular logger."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException


class MetricsTable(Callback):
    """Print the metrics logged in each training epoch as one table row (what pl_bolts'
    ``PrintTableMetricsCallback`` did).

    It reads ``trainer.callback_metrics``, never the step outputs, so a ``validation_step`` that returns
    something cannot break it. ``rows`` keeps every epoch's row.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row: dict[str, float] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for name, value in sorted(trainer.callback_metrics.items()):
            if name.endswith("_step") or value.numel() != 1:
                continue
            row[name.removesuffix("_epoch")] = value.item()
        self.rows.append(row)
        pl_module.print(format_row(row))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


def format_row(row: dict[str, float]) -> str:
    """A two-line table: the metric names over their values, each column as wide as its longer cell."""
    cells = [
        (name, f"{value:.4g}" if isinstance(value, float) else str(value)) for name, value in row.items()
    ]
    widths = [max(len(name), len(value)) for name, value in cells]
    header = " │ ".join(name.ljust(w) for (name, _), w in zip(cells, widths, strict=True))
    values = " │ ".join(value.ljust(w) for (_, value), w in zip(cells, widths, strict=True))
    return f"{header}\n{'─' * len(header)}\n{values}"


class RandomStateCallback(Callback):
    """Keep the global random states (torch, CUDA, numpy, random) in every checkpoint and restore them on
    resume, so that noise drawn in ``training_step`` (GAN latents, dropout) continues as if never stopped.

    The shared datamodules draw their shuffles and loader seeds from their own generators, so the global
    state is touched by the model alone.
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": _tuples_to_lists(random.getstate()),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_lists_to_tuples(state_dict["python"]))


def _tuples_to_lists(value: Any) -> Any:
    return [_tuples_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _lists_to_tuples(value: Any) -> Any:
    return tuple(_lists_to_tuples(v) for v in value) if isinstance(value, list) else value


class LastCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt``: the state at the end of every training epoch, the file to resume from.

    Lightning 2.x writes ``save_last=True``'s ``last.ckpt`` only when its callback saves a top-k file, so a
    callback monitoring ``val/acc`` leaves ``last.ckpt`` at the best epoch, not the latest. This one
    monitors nothing and keeps one file; the configurable ``checkpoint`` callback keeps the best ones.
    (A subclass also gets its own ``state_key``, so both can live in one Trainer.)
    """

    def __init__(self) -> None:
        # at every training epoch's end even with check_val_every_n_epoch > 1, where ModelCheckpoint's
        # default would wait for the next validation
        super().__init__(
            filename="last", save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True
        )


class CrashCheckpoint(Callback):
    """Save ``on_exception.ckpt`` when training dies of an exception or SIGTERM (a cluster's pre-emption),
    so the run resumes with ``--ckpt_path``; nothing is written for errors raised before training began,
    nor under DDP for anything but SIGTERM.

    A finished ``fit`` removes the file again. Only SIGKILL leaves no time to save: then the last
    ``ModelCheckpoint`` file (``last.ckpt``) is the one to resume from. (A plain callback rather than
    Lightning's ``OnExceptionCheckpoint``: a second ``Checkpoint`` could take the place of the
    ``ModelCheckpoint`` that ``trainer.checkpoint_callback`` and ``ckpt_path="best"`` rely on.)
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / "on_exception.ckpt"

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.global_step == 0:
            return
        # Under DDP an ordinary exception usually stops one process only, and saving (a collective) would
        # wait for the others forever. Lightning broadcasts SIGTERM, so on SIGTERM all processes are here.
        if trainer.world_size > 1 and not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(self.path)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            self.path.unlink(missing_ok=True)


class PredictionWriter(BasePredictionWriter):
    """Write what ``predict`` returns to ``predictions.pt`` in the run's folder (one file per process)."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Any,
        batch_indices: Any,
    ) -> None:
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = folder / f"predictions{suffix}.pt"
        if predictions and all(isinstance(p, torch.Tensor) for p in predictions):
            predictions = torch.cat(predictions)
        torch.save({"predictions": predictions, "batch_indices": batch_indices}, path)
        pl_module.print(f"Predictions written to {path}")
