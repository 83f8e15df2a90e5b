"""The one LightningCLI every system's ``train.py`` runs."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities.model_helpers import is_overridden

from shared.callbacks import (
    CrashCheckpoint,
    LastCheckpoint,
    MetricsTable,
    PredictionWriter,
    RandomStateCallback,
)
from shared.checkpoints import check_checkpoint_class, read_checkpoint

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class SystemCLI(LightningCLI):
    """LightningCLI with this project's conventions, so that each ``train.py`` is a few lines.

    - No arguments means ``fit`` with the system's ``config.yaml``; every subcommand reads that file as
      its defaults, and ``--config`` files and flags override it.
    - TensorBoard and CSV loggers write into ONE folder, ``lightning_logs/<name>/version_N/``, where the
      checkpoints go too: ``checkpoints/last.ckpt`` after every epoch, and the best ones as the
      ``checkpoint`` section configures (``monitor``, ``mode``, ``save_top_k``, ``filename``).
    - ``--data`` takes any datamodule class path; the facts a model needs (``num_classes``, image
      ``dims``, ...) are linked from the datamodule into the model, never typed twice.
    - A checkpoint given with ``--ckpt_path`` is checked before anything runs; a crash or SIGTERM during
      ``fit`` leaves ``checkpoints/on_exception.ckpt``; a finished ``fit`` is tested on its best checkpoint.

    Args:
        model_class: the system's LightningModule.
        name: the system's folder under ``lightning_logs``.
        config_file: the ``config.yaml`` the system runs with by default.
        links: datamodule attribute -> model ``__init__`` argument, for each fact the model takes from data.
        args: command-line style arguments; None reads ``sys.argv``.
        run: run the subcommand (False only builds model, data and trainer, e.g. for tuning).
    """

    def __init__(
        self,
        model_class: type[pl.LightningModule],
        *,
        name: str,
        config_file: str | Path,
        links: Mapping[str, str],
        args: ArgsType = None,
        run: bool = True,
    ) -> None:
        self.name = name
        self.links = dict(links)
        # allow_abbrev=False: argparse would otherwise take a mistyped --trainer.max_epoch for max_epochs
        defaults = {"default_config_files": [str(config_file)], "allow_abbrev": False}
        if run and args is None and len(sys.argv) == 1:
            args = ["fit"]
        super().__init__(
            model_class,
            pl.LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=42,
            trainer_defaults={
                "callbacks": [MetricsTable(), RandomStateCallback(), PredictionWriter(), LastCheckpoint()]
            },
            parser_kwargs={"allow_abbrev": False, **{sub: defaults for sub in SUBCOMMANDS}}
            if run
            else defaults,
            save_config_kwargs={"overwrite": False},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: run the test set on the best checkpoint once fitting ends",
        )
        for fact, argument in self.links.items():
            parser.link_arguments(f"data.{fact}", f"model.{argument}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then check ``--ckpt_path`` before LightningCLI reads hyper-parameters out of it."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            check_checkpoint_class(read_checkpoint(ckpt_path), self.model_class, ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """Give the Trainer the two loggers sharing one version folder, unless the config names loggers."""
        trainer_config: Namespace | dict = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            root = Path(trainer_config.get("default_root_dir") or ".") / "lightning_logs"
            tensorboard = TensorBoardLogger(save_dir=root, name=self.name, default_hp_metric=False)
            csv = CSVLogger(save_dir=root, name=self.name, version=tensorboard.version)
            # sharing the folder is the point; CSVLogger would warn that it "exists and is not empty"
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
            kwargs["logger"] = [tensorboard, csv]
            crash = CrashCheckpoint(dirpath=Path(tensorboard.log_dir) / "checkpoints")
            callbacks = trainer_config.get("callbacks") or []
            kwargs["callbacks"] = [*(callbacks if isinstance(callbacks, list) else [callbacks]), crash]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """The 1.x ``trainer.test()`` loaded the best model; in 2.x that is ``ckpt_path="best"``, said aloud.

        The path is passed explicitly: with ``LastCheckpoint`` beside it, ``"best"`` would resolve to the
        same file (the first ModelCheckpoint's) but warn about the second callback on every run.
        """
        if not self._get(self.config, "test_after_fit") or not is_overridden("test_step", self.model):
            return
        if self.trainer.interrupted:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
