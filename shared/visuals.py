"""Figures and images: a PNG in the run's folder always, and TensorBoard too when that logger is on."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger


def log_figure(trainer: pl.Trainer, tag: str, figure: Figure) -> Path | None:
    """Save ``figure`` as ``<version folder>/<tag>/epoch=NNN.png`` and hand it to TensorBoard if present.

    Call it on every process: under DDP ``trainer.log_dir`` is a broadcast, and a call on rank 0 alone
    waits forever. Only global rank 0 writes. Returns the PNG path, or None where nothing is written
    (other ranks, the sanity check, or ``fast_dev_run``, whose dummy logger has no folder).
    """
    folder = trainer.log_dir
    if folder is None or not trainer.is_global_zero or trainer.sanity_checking:
        return None
    path = Path(folder) / tag.replace("/", "_") / f"epoch={trainer.current_epoch:03d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)
    return path
