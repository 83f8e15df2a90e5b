"""Figures, image grids and text: a file in the run's folder always, and TensorBoard too when that logger
is on, so that the CSV logger alone still leaves every picture and example behind.

Call these on every process: under DDP ``trainer.log_dir`` is a broadcast that all of them must join (a
call from rank 0 alone waits forever). Only global rank 0 writes. Each returns the file's path, or None
where nothing is written (other ranks, the sanity check, or ``fast_dev_run``, whose logger has no folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn, not by every system
    from matplotlib.figure import Figure


def _epoch_file(trainer: pl.Trainer, tag: str, suffix: str) -> Path | None:
    """``<version folder>/<tag>/epoch=NNN<suffix>`` with its folder made, or None where nothing is written."""
    folder = trainer.log_dir  # the broadcast: every process gets here
    if folder is None or not trainer.is_global_zero or trainer.sanity_checking:
        return None
    path = Path(folder) / tag.replace("/", "_") / f"epoch={trainer.current_epoch:03d}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _tensorboards(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def log_figure(trainer: pl.Trainer, tag: str, figure: Figure) -> Path | None:
    """A matplotlib figure as ``<version folder>/<tag>/epoch=NNN.png``."""
    path = _epoch_file(trainer, tag, ".png")
    if path is None:
        return None
    figure.savefig(path, dpi=100, bbox_inches="tight")
    for tensorboard in _tensorboards(trainer):
        tensorboard.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)
    return path


def log_image_grid(
    trainer: pl.Trainer,
    tag: str,
    images: torch.Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
    nrow: int = 8,
    scale: int = 1,
) -> Path | None:
    """``(N, C, H, W)`` images tiled into one grid, as ``<version folder>/<tag>/epoch=NNN.png``.

    ``value_range`` maps to black..white; ``scale`` enlarges each pixel (nearest) so small images show.
    """
    path = _epoch_file(trainer, tag, ".png")
    if path is None:
        return None
    low, high = value_range
    pixels = ((images.detach().float().cpu() - low) / (high - low)).clamp(0.0, 1.0)
    if scale > 1:
        pixels = pixels.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    grid = make_grid(pixels, nrow=nrow, padding=scale, pad_value=1.0)
    save_image(grid, path)
    for tensorboard in _tensorboards(trainer):
        tensorboard.experiment.add_image(tag, grid, global_step=trainer.global_step)
    return path


def log_text(trainer: pl.Trainer, tag: str, text: str) -> Path | None:
    """Text as ``<version folder>/<tag>/epoch=NNN.txt``; TensorBoard renders text as Markdown, so it gets
    the text indented as a code block (monospaced, line breaks kept)."""
    path = _epoch_file(trainer, tag, ".txt")
    if path is None:
        return None
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    for tensorboard in _tensorboards(trainer):
        markdown = "\n".join("    " + line for line in text.splitlines())
        tensorboard.experiment.add_text(tag, markdown, global_step=trainer.global_step)
    return path
