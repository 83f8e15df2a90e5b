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


def log_text(trainer: pl.Trainer, tag: str, text: str) -> Path | None:
    """Save ``text`` as ``<version folder>/<tag>/epoch=NNN.txt`` and hand it to TensorBoard if present.

    The file makes it readable with the CSV logger alone. TensorBoard renders text as Markdown, so it
    gets the text indented as a code block (monospaced, line breaks kept). Call it on every process:
    under DDP ``trainer.log_dir`` is a broadcast that all of them must join; only global rank 0 writes.
    Returns the file's path, or None where nothing is written (other ranks, sanity checking, or
    ``fast_dev_run``, whose dummy logger has no folder).
    """
    if trainer.sanity_checking:
        return None
    folder = trainer.log_dir
    if not trainer.is_global_zero or folder is None:
        return None
    path = Path(folder) / tag.replace("/", "_") / f"epoch={trainer.current_epoch:03d}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            markdown = "\n".join("    " + line for line in text.splitlines())
            logger.experiment.add_text(tag, markdown, global_step=trainer.global_step)
    return path
