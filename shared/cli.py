"""The one LightningCLI every system's ``train.py`` runs."""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.model_helpers import is_overridden
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from shared.callbacks import (
    BestCheckpoint,
    GracefulStop,
    LastCheckpoint,
    MetricsTable,
    PredictionWriter,
    RandomStateCallback,
    ResumeSettings,
    same_value,
)
from shared.checkpoints import (
    WholeFileCheckpointIO,
    check_checkpoint_class,
    read_checkpoint,
    state_mismatch,
)
from shared.errors import Interrupted, UserError, reported, require

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# Lightning 2.6 calls an API that torch 2.14 deprecates, at every step; nothing a user can act on
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


class Trainer(pl.Trainer):
    """``pl.Trainer`` with its int-or-float arguments spelt int first, so that ``--trainer.limit_train_batches=1``
    means one batch, as ``Trainer(limit_train_batches=1)`` does in Python.

    Lightning annotates them ``Optional[Union[int, float]]``, which Python's typing cache may hand out as
    ``Union[float, int, None]``; the parser then tries float first and reads ``1`` as ``1.0``: all batches.
    """

    def __init__(
        self,
        *,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | str | timedelta | dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            overfit_batches=overfit_batches,
            val_check_interval=val_check_interval,
            **kwargs,
        )


class SystemCLI(LightningCLI):
    """LightningCLI with this project's conventions, so that each ``train.py`` is a few lines.

    - No subcommand means ``fit`` (``python -m systems.gan.train --trainer.max_epochs=5`` fits); every
      subcommand reads the system's ``config.yaml`` as its defaults, and ``--config`` files and flags
      override it.
    - TensorBoard and CSV loggers write into ONE folder, ``lightning_logs/<name>/version_N/``, claimed
      atomically (two runs started together never share one), where the checkpoints go too:
      ``checkpoints/last.ckpt`` after every epoch, and the best ones as the ``checkpoint`` section says.
    - ``--data`` takes any datamodule class path; the facts a model needs (``num_classes``, image
      ``dims``, ...) are linked from the datamodule into the model, never typed twice.
    - ``--ckpt_path`` is checked before anything runs (``last`` means this system's newest checkpoint);
      model flags given with it take effect where the weights allow, and are refused where they do not.
    - A mistake gets one sentence and exit status 2, with nothing left behind; Ctrl-C and SIGTERM during
      ``fit`` save ``checkpoints/interrupted.ckpt`` and exit with 130 and 143 (``shared/errors.py``).
    - A finished ``fit`` is tested on its best checkpoint.

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
        self.run_folder: Path | None = None  # the version folder this command claimed
        self._made: list[Path] = []  # folders it created, removed again when a mistake stops it
        self._checkpoint: dict[str, Any] | None = None
        self._given: dict[str, Any] = {}  # model settings the user gave explicitly
        self.overrides: dict[
            str, tuple[Any, Any]
        ] = {}  # given with --ckpt_path: key -> (checkpoint's, given)
        # allow_abbrev=False: argparse would otherwise take a mistyped --trainer.max_epoch for max_epochs;
        # exit_on_error=False: the parser's error comes as an exception, printed without its long usage
        defaults = {"default_config_files": [str(config_file)], "allow_abbrev": False, "exit_on_error": False}
        given = sys.argv[1:] if args is None else args
        if run and isinstance(given, (list, tuple)) and not set(given) & {*SUBCOMMANDS, "-h", "--help"}:
            args = ["fit", *given]  # no subcommand: fit, with whatever flags came
        with reported(on_bad_input=self.remove_what_was_written):
            super().__init__(
                model_class,
                pl.LightningDataModule,
                subclass_mode_data=True,
                trainer_class=Trainer,
                seed_everything_default=42,
                trainer_defaults={
                    "callbacks": [
                        MetricsTable(),
                        RandomStateCallback(),
                        PredictionWriter(),
                        LastCheckpoint(),
                        ResumeSettings(),
                        GracefulStop(),
                    ]
                },
                parser_kwargs={
                    "allow_abbrev": False,
                    "exit_on_error": False,
                    **{sub: defaults for sub in SUBCOMMANDS},
                }
                if run
                else defaults,
                save_config_kwargs={"overwrite": False},
                # the systems own their optimizers: --optimizer and --lr_scheduler would only be ignored
                auto_configure_optimizers=False,
                args=args,
                run=run,
            )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: run the test set on the best checkpoint once fitting ends",
        )
        for fact, argument in self.links.items():
            parser.link_arguments(f"data.{fact}", f"model.{argument}", apply_on="instantiate")

    def _section(self, config: Any) -> Any:
        return config[self.subcommand] if self.subcommand else config

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then read and check ``--ckpt_path`` before LightningCLI takes hyper-parameters from it."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        path = config.get("ckpt_path")
        if path == "last":
            config.ckpt_path = path = str(self._newest_checkpoint(config.trainer.get("default_root_dir")))
        require(
            path != "best",
            "--ckpt_path=best has no meaning in a new command: pass the path of a checkpoint file.",
        )
        if path and path not in ("hpc", "registry"):
            self._checkpoint = read_checkpoint(path)
            check_checkpoint_class(self._checkpoint, self.model_class, path)
            keys = given_model_keys(sys.argv[1:] if args is None else list(args), subcommand)
            self._given = {k: config.model[k] for k in keys if k in config.model}

    def _newest_checkpoint(self, root_dir: str | None) -> Path:
        """``--ckpt_path=last``: the newest ``last.ckpt`` or ``interrupted.ckpt`` of this system's runs."""
        root = Path(root_dir or ".") / "lightning_logs"
        names = ("last.ckpt", GracefulStop.filename)
        found = [p for name in names for p in (root / self.name).glob(f"version_*/checkpoints/{name}")]
        require(
            bool(found),
            f"--ckpt_path=last found no checkpoint under {root / self.name}: train first, or pass a file.",
        )
        return max(found, key=lambda p: p.stat().st_mtime)

    def before_instantiate_classes(self) -> None:
        """LightningCLI has put the checkpoint's hyper-parameters over the configuration; the model settings
        given explicitly with ``--ckpt_path`` win over them (the weights are checked once the model exists)."""
        if not self._given:
            return
        model = self._section(self.config).model
        saved = self._checkpoint.get("hyper_parameters", {})
        for key, value in self._given.items():
            if key in saved and not same_value(saved[key], value):
                self.overrides[key] = (saved[key], value)
                model[key] = value
        if self.overrides:
            rank_zero_info(
                "Given with --ckpt_path, these take effect: "
                + ", ".join(f"model.{k} {old} -> {new}" for k, (old, new) in self.overrides.items())
            )

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """Check what can be checked before anything is written, claim the run's folder, build the Trainer."""
        self._check_the_checkpoint_fits()
        trainer_config = self._section(self.config_init)["trainer"]
        accelerator = trainer_config.get("accelerator")
        require(
            accelerator not in ("gpu", "cuda")
            or torch.cuda.is_available()
            or torch.backends.mps.is_available(),
            f"--trainer.accelerator={accelerator}, but torch sees no GPU on this machine: use "
            "--trainer.accelerator=auto (or cpu).",
        )
        epochs = trainer_config.get("max_epochs")
        require(
            self.subcommand != "fit" or epochs is None or epochs == -1 or epochs >= 1,
            f"--trainer.max_epochs={epochs} trains nothing: set it to the number of epochs to train (or -1 "
            "to train until --trainer.max_steps).",
        )
        if trainer_config.get("logger") in (None, True) and not trainer_config.get("fast_dev_run"):
            root = Path(trainer_config.get("default_root_dir") or ".") / "lightning_logs"
            version = self._claim_version(root / self.name)
            tensorboard = TensorBoardLogger(root, name=self.name, version=version, default_hp_metric=False)
            csv = CSVLogger(root, name=self.name, version=version)
            # sharing the folder is the point; CSVLogger would warn that it "exists and is not empty"
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
            kwargs["logger"] = [tensorboard, csv]
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = WholeFileCheckpointIO()
        return trainer

    def _check_the_checkpoint_fits(self) -> None:
        if self._checkpoint is None:
            return
        path = self._section(self.config).ckpt_path
        details = state_mismatch(self.model.state_dict(), self._checkpoint["state_dict"])
        if not details:
            return
        if self.overrides:
            given = ", ".join(f"--model.{k}={new}" for k, (_, new) in self.overrides.items())
            saved = ", ".join(f"{k}={old}" for k, (old, _) in self.overrides.items())
            raise UserError(
                f"{given} does not fit the weights in {path}, which were trained with {saved} ({details}): "
                "drop the flag, or train a new run with it."
            )
        raise UserError(
            f"The weights in {path} do not fit the model this configuration builds ({details}): use the "
            "model and data settings of the run that wrote it."
        )

    def _claim_version(self, folder: Path) -> int:
        """The next free ``version_N`` in ``folder``, created at once: ``mkdir`` either creates a folder or
        fails, so two runs started together never share one. Processes other than the first only name it."""
        taken = [int(m[1]) for p in _listing(folder) if (m := re.fullmatch(r"version_(\d+)", p.name))]
        version = max(taken, default=-1) + 1
        if rank_zero_only.rank != 0 or int(os.environ.get("NODE_RANK", 0)) != 0:
            return version
        try:
            self._made += [p for p in (folder, *folder.parents) if not p.exists()]
            folder.mkdir(parents=True, exist_ok=True)
            while True:
                try:
                    (folder / f"version_{version}").mkdir()
                    break
                except FileExistsError:
                    version += 1
        except OSError as error:
            raise UserError(
                f"The run's folder cannot be made in {folder} ({error.strerror}): run from a writable "
                "folder, or point --trainer.default_root_dir at one."
            ) from None
        self.run_folder = folder / f"version_{version}"
        return version

    def remove_what_was_written(self) -> None:
        """After a mistake: the claimed run folder (unless it holds a checkpoint) and the folders made for it."""
        if self.run_folder is not None and not any(self.run_folder.rglob("*.ckpt")):
            shutil.rmtree(self.run_folder, ignore_errors=True)
        for folder in self._made:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def after_fit(self) -> None:
        """The 1.x ``trainer.test()`` loaded the best model; in 2.x that is ``ckpt_path="best"``, said aloud.

        The path is passed explicitly: with ``LastCheckpoint`` beside it, ``"best"`` would resolve to the
        same file (the first ModelCheckpoint's) but warn about the second callback on every run. A stop
        requested after the last batch let training finish: the test is skipped and the stop reported.
        """
        stop = next(c for c in self.trainer.callbacks if isinstance(c, GracefulStop))
        if stop.signum is not None:
            last = next(c for c in self.trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint))
            raise Interrupted(stop.signum, last.best_model_path or None)
        if not self._section(self.config).test_after_fit or not is_overridden("test_step", self.model):
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def _listing(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def given_model_keys(args: list[str], subcommand: str) -> set[str]:
    """The model settings named explicitly on the command line or in a ``--config`` file given there (not
    the defaults of ``config.yaml``): ``--model.lr=0.5`` gives ``{"lr"}``."""
    keys: set[str] = set()
    for index, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if not value and index + 1 < len(args):
            value = args[index + 1]
        if name.startswith("--model."):
            keys.add(name.removeprefix("--model.").split(".")[0])
        elif name in ("--config", "--model") and Path(value).is_file():
            content = yaml.safe_load(Path(value).read_text()) or {}
            if name == "--config":
                content = content.get(subcommand, content).get("model") or {}
            if isinstance(content, dict):
                keys |= set(content.get("init_args", content)) - {"class_path", "init_args"}
    return keys
