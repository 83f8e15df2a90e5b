"""Figures, image grids and text beside the logs: a file in the run's folder always (so the CSV logger alone keeps
every picture), TensorBoard's copy when that logger is on, and an artifact of the run of each tracker among the
loggers (MLflow, W&B)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger


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


def to_trackers(trainer: pl.Trainer, path: Path, tag: str | None = None) -> None:
    """``path``, a file of the run's folder, as an artifact of the run of each tracker among the loggers: a file
    ``epoch_file`` gave for ``tag``, or with no tag one at the top of the folder (``config.yaml``). The first process
    only (where ``epoch_file`` gave a path): it makes no collective call."""
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            mlflow_artifact(logger, path, tag)
        elif isinstance(logger, WandbLogger):
            wandb_file(logger, path, tag, trainer.global_step)


def mlflow_artifact(logger: MLFlowLogger, path: Path, tag: str | None) -> None:
    """MLflow: the file among the run's artifacts, at the top or in the folder ``epoch_file`` names for ``tag``
    (``val_confusion_matrix/epoch=000.png``), as in the run's folder."""
    logger.experiment.log_artifact(logger.run_id, str(path), tag and tag.replace("/", "_"))


def wandb_file(logger: WandbLogger, path: Path, tag: str | None, step: int) -> None:
    """W&B: a PNG as an image of the run's media under ``tag`` at ``step``; any other file among the run's files,
    below the run folder's name (``version_0/config.yaml``: W&B keeps a ``config.yaml`` of its own at the top)."""
    if tag and path.suffix == ".png":
        logger.log_image(tag, [str(path)], step=step)
    else:
        run_folder = path.parents[0 if tag is None else 1]
        logger.experiment.save(str(path), base_path=str(run_folder.parent), policy="now")
