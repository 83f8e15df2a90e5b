"""Figures and image grids: a PNG in the run's folder always, and TensorBoard too when that logger is on."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image


def log_figure(trainer: pl.Trainer, tag: str, figure: Figure) -> Path | None:
    """Save ``figure`` as ``<version folder>/<tag>/epoch=NNN.png`` and hand it to TensorBoard if present.

    Only global rank 0 writes. Returns the PNG path, or None where nothing is written (other ranks, or
    ``fast_dev_run``, whose dummy logger has no folder).
    """
    if not trainer.is_global_zero or trainer.log_dir is None or trainer.sanity_checking:
        return None
    path = Path(trainer.log_dir) / tag.replace("/", "_") / f"epoch={trainer.current_epoch:03d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)
    return path


def log_image_grid(
    trainer: pl.Trainer,
    tag: str,
    images: torch.Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
    nrow: int = 8,
    scale: int = 1,
) -> Path | None:
    """Tile ``(N, C, H, W)`` images into one grid, save it as ``<version folder>/<tag>/epoch=NNN.png`` and
    hand it to TensorBoard if present (so a CSV logger alone still leaves the picture).

    ``value_range`` maps to black..white; ``scale`` enlarges each pixel (nearest) so small images show.
    Call it on every process: under DDP ``trainer.log_dir`` is a broadcast that all of them must join (a
    call from rank 0 alone waits forever). Only global rank 0 writes; returns the PNG path, or None where
    nothing is written (other ranks, sanity checking, or ``fast_dev_run``, whose logger has no folder).
    """
    folder = trainer.log_dir
    if not trainer.is_global_zero or folder is None or trainer.sanity_checking:
        return None
    low, high = value_range
    pixels = ((images.detach().float().cpu() - low) / (high - low)).clamp(0.0, 1.0)
    if scale > 1:
        pixels = pixels.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    grid = make_grid(pixels, nrow=nrow, padding=scale, pad_value=1.0)
    path = Path(folder) / tag.replace("/", "_") / f"epoch={trainer.current_epoch:03d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, grid, global_step=trainer.global_step)
    return path
