"""Figures, image grids and text beside the logs: a file in the run's folder always (so the CSV logger alone keeps
every picture) and TensorBoard's copy when that logger is on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger


def epoch_file(trainer: pl.Trainer, tag: str, suffix: str) -> Path | None:
    """``<run folder>/<tag>/epoch=NNN<suffix>``, its folder made; None where nothing is written (processes other
    than the first, the sanity check, ``fast_dev_run``). Call it on every process: under DDP ``log_dir`` is a
    broadcast that all of them must join."""
    folder = trainer.log_dir
    if folder is None or not trainer.is_global_zero or trainer.sanity_checking:
        return None
    path = Path(folder) / tag.replace("/", "_") / f"epoch={trainer.current_epoch:03d}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def tensorboards(trainer: pl.Trainer) -> list[Any]:
    """The ``SummaryWriter`` of each TensorBoard logger of the run."""
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
