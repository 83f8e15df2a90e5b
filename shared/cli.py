"""The command line every ``train.py`` runs: ``LightningCLI`` with this project's conventions, an optional layer over
the kit (``resume.py``, ``checkpoints.py``, ``errors.py``), whose pieces work without it."""

from __future__ import annotations

import csv
import inspect
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import set_loader
from pytorch_lightning.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.environments import ClusterEnvironment, SLURMEnvironment
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from torch.utils.tensorboard.summary import hparams

from shared.checkpoints import WholeFileCheckpointIO, read_checkpoint, state_mismatch
from shared.errors import Interrupted, UserError, reported, require
from shared.resume import GracefulStop, LastCheckpoint, RandomState, ResumeSettings
from shared.visuals import tensorboards, to_trackers

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# a run prints what its user needs: not Lightning's own deprecation, not the warning that args are sys.argv (they
# are, here), not Lightning's advertisement for its cloud ("💡 Tip: ... litlogger")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda r: "💡 Tip" not in str(r.msg))
# a class path as Lightning's docs spell it, ``lightning.pytorch.X``, read as ``pytorch_lightning.X``: the same class
# (the ``lightning`` package, where installed, has classes of its own), in flags and in config files
DOCS_SPELLING = re.compile(r"(?<![\w.])lightning\.pytorch\.(?=(\w+\.)*[A-Z])")


def _docs_spelling(text: str) -> str:
    return DOCS_SPELLING.sub("pytorch_lightning.", text)


set_loader("systems", lambda text: yaml.safe_load(_docs_spelling(text)), (yaml.YAMLError,))
# int first: the parser tries Lightning's ``float | int`` as a float first, and reads 1 as 1.0 (all batches)
Limit = int | float | None


class Trainer(pl.Trainer):
    """``pl.Trainer`` whose ``--trainer.limit_train_batches=1`` is one batch, as in Python, and whose settings that
    would fail deep inside a run are refused in one sentence."""

    def __init__(
        self,
        *,
        limit_train_batches: Limit = None,
        limit_val_batches: Limit = None,
        limit_test_batches: Limit = None,
        limit_predict_batches: Limit = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | str | dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        every, clip, epochs = (
            kwargs.get(k) for k in ("accumulate_grad_batches", "gradient_clip_val", "max_epochs")
        )
        never = f"--trainer.accumulate_grad_batches={every} would never step"
        require(every is None or every >= 1, f"{never}: set it to 1 or more.")
        flips = "which flips the gradients (training climbs the loss): set it above 0, or 0 for no clipping"
        require((clip or 0) >= 0, f"--trainer.gradient_clip_val={clip} is negative, {flips}.")
        until = "set it to the epochs to train (or -1 to train until max_steps)"
        require(
            epochs in (None, -1) or epochs >= 1, f"--trainer.max_epochs={epochs} trains nothing: {until}."
        )
        gpu = kwargs.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available()
        require(not gpu, "torch sees no GPU here: use --trainer.accelerator=auto or cpu.")
        kwargs |= {"limit_train_batches": limit_train_batches, "limit_val_batches": limit_val_batches}
        kwargs |= {"limit_test_batches": limit_test_batches, "limit_predict_batches": limit_predict_batches}
        super().__init__(overfit_batches=overfit_batches, val_check_interval=val_check_interval, **kwargs)


class SystemCLI(LightningCLI):
    """No subcommand means ``fit``; the ``config.yaml`` beside the model's module is every subcommand's defaults;
    TensorBoard, CSV and the checkpoints share one ``lightning_logs/<name>/version_N``, which a resume continues;
    the kit's callbacks are on; ``links`` (data attribute -> model argument) are linked; ``--ckpt_path`` is read and
    checked before anything runs; a mistake is one sentence, status 2, with nothing left behind; on SLURM,
    pre-emption saves into the run folder and a requeued job resumes its own run."""

    def __init__(
        self, model: type, name: str, links: dict, args: Any = None, run: bool = True, config: str = ""
    ) -> None:
        self.name, self.links, self.checkpoint, self.run_folder, self.made = name, links, None, None, []
        self.continued: tuple[Path, set[Path], bytes | None] | None = None  # a resume's run folder, as it was
        args = [_docs_spelling(arg) for arg in (sys.argv[1:] if args is None else args)]
        if run and not set(args) & {*SUBCOMMANDS, "-h", "--help"}:
            args = ["fit", *args]
        # the parser of the subcommand given, not all four (each reads every signature: 0.2 s); all for --help
        first = next((a for a in args if a in {*SUBCOMMANDS, "-h", "--help"}), None)
        self.parsed_subcommands = (first,) if first in SUBCOMMANDS else SUBCOMMANDS
        # allow_abbrev: --trainer.max_epoch is refused, not read as max_epochs; the parser's errors are exceptions
        settings = {"allow_abbrev": False, "exit_on_error": False, "parser_mode": "systems"}
        config_file = Path(inspect.getfile(model)).with_name(config or "config.yaml")
        defaults = {**settings, "default_config_files": [config_file]}
        resume = [RandomState(), LastCheckpoint(), ResumeSettings(), GracefulStop()]  # the kit's exact resume
        callbacks = [*resume, MetricsOnDisk(), PredictionWriter()]
        options = {"subclass_mode_data": True, "trainer_class": Trainer, "seed_everything_default": 42}
        options |= {"trainer_defaults": {"callbacks": callbacks}, "save_config_kwargs": {"overwrite": False}}
        options["save_config_callback"] = RunConfig
        options["auto_configure_optimizers"] = False  # the systems configure their own
        subparsers = dict.fromkeys(self.parsed_subcommands, defaults)
        options["parser_kwargs"] = {**settings, **subparsers} if run else defaults
        with reported(self.remove_what_was_written):
            try:
                super().__init__(model, pl.LightningDataModule, args=args, run=run, **options)
            except Interrupted as stop:  # SLURM's warning before its time limit: the job is started again
                if stop.signum == signal.SIGUSR1 and stop.saved and SLURMEnvironment.detect():
                    stop.then = _requeue(stop.saved) if rank_zero_only.rank == 0 else None
                raise

    def subcommands(self) -> dict[str, set[str]]:  # LightningCLI's static method, which it calls on self
        return {name: skip for name, skip in super().subcommands().items() if name in self.parsed_subcommands}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="fit: test the best checkpoint")
        new = "fit --ckpt_path: write into a new run folder, not the checkpoint's"
        parser.add_argument("--new_run_folder", type=bool, default=False, help=new)
        for fact, argument in self.links.items():
            parser.link_arguments(f"data.{fact}", f"model.{argument}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # then the seed and --ckpt_path, checked before anything is built (run=False: no subcommand)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        seed, path, root = (
            config.get("seed_everything"),
            config.get("ckpt_path"),
            config.trainer.default_root_dir,
        )
        numpy = f"--seed_everything={seed} is outside 0 to {2**32 - 1}, the seeds numpy takes: pick one there"
        require(seed is None or isinstance(seed, bool) or 0 <= seed < 2**32, f"{numpy}.")
        require(path != "", "--ckpt_path is empty (an unset shell variable?): pass a checkpoint, or no flag.")
        runs = Path(root or ".") / "lightning_logs" / self.name
        if path == "last":
            config.ckpt_path = path = _newest(runs.glob("version_*"))
            require(path is not None, f"--ckpt_path=last found no checkpoint under {runs}: train first.")
        if path is None and SLURMEnvironment.detect():
            stale = ", ".join(str(p) for p in Path(root or ".").glob("hpc_ckpt_*.ckpt"))
            plugin = (
                f"Lightning's SLURM plug-in would resume {stale} by itself, a file this run did not write"
            )
            require(not stale, f"{plugin}: move it away, or pass it with --ckpt_path to resume from it.")
            if subcommand == "fit" and int(os.environ.get("SLURM_RESTART_COUNT", 0)) > 0:  # requeued: its own
                config.ckpt_path = path = _newest(
                    p.parent for p in runs.glob("version_*/slurm_job") if _ours(p)
                )
        require(path != "best", "--ckpt_path=best means nothing to a new command: pass a checkpoint file.")
        self.checkpoint = read_checkpoint(path) if path and path not in ("hpc", "registry") else None
        data = config.get("data")  # one's own data (datamodules/own.py) reads the model's checkpoint
        if subcommand == "predict" and "checkpoint" in getattr(data, "init_args", {}):
            given, data.init_args.checkpoint = data.init_args.checkpoint, path
            flag = f"--data.init_args.checkpoint={given}"
            require(given in (None, path), f"{flag} differs from --ckpt_path: drop it, predict fills it in.")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # jsonargparse's, over what a class raised
            store = "MLFLOW_ALLOW_FILE_STORE" in str(error.__cause__ or error.__context__)
            fix = "use --trainer.logger.tracking_uri=sqlite:///mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true"
            require(not store, f"This MLflow refuses its file store (file:...) unless asked: {fix}.")
            raise

    def _parse_ckpt_path(self) -> None:
        """The one private method of Lightning this project overrides (``tests/test_private.py``): LightningCLI 2.5.5+
        puts a checkpoint's hyper-parameters over the configuration here, dropping the flags given with
        ``--ckpt_path``. Here the configuration builds the model, as ``Trainer.fit(model, ckpt_path=...)`` does."""

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        if self.checkpoint is not None:  # what differs from it is said; weights that do not fit are refused
            saved, hp = self.checkpoint.get("hyper_parameters", {}), self.model.hparams
            text = partial(json.dumps, default=str)  # compared as text: a checkpoint keeps tuples as lists
            changed = {k: saved[k] for k, v in hp.items() if k in saved and text(saved[k]) != text(v)}
            if changed:
                said = ", ".join(f"model.{k} {v} -> {hp[k]}" for k, v in changed.items())
                rank_zero_info(f"Not as in the checkpoint: {said}")
            if details := state_mismatch(self.model.state_dict(), self.checkpoint["state_dict"]):
                path = Path(self.config[self.subcommand].ckpt_path)
                run = path.parent.parent / "config.yaml"
                fix = f"--config {run}" if run.is_file() else "the settings of the run that wrote them"
                trained = ", ".join(f"{k}={v}" for k, v in changed.items()) or "other settings"
                message = f"The weights in {path} do not fit the model this configuration builds ({details})"
                raise UserError(f"{message}: they were trained with {trained}; pass {fix}.")
        trainer = (self.config_init[self.subcommand] if self.subcommand else self.config_init).trainer
        named = trainer.get("logger")
        trackers = [] if named in (None, True) else list(named) if isinstance(named, Iterable) else [named]
        own_folder = bool(trackers) and isinstance(trackers[0], (TensorBoardLogger, CSVLogger))
        if named not in (False, []) and not own_folder and not trainer.get("fast_dev_run"):
            # the default, or a tracker first (MLflow, W&B: Lightning's log_dir would be its save_dir, shared by every
            # run): this project's pair goes first, so the run has its own folder; the tracker gets its files too
            root = Path(trainer.get("default_root_dir") or ".") / "lightning_logs"
            kwargs["logger"] = [*self._loggers(root), *trackers]
        if SLURMEnvironment.detect():  # pre-emption is GracefulStop's, into the run folder: not the plug-in's
            plugins = trainer.get("plugins") or []
            plugins = plugins if isinstance(plugins, list) else [plugins]
            if not any(isinstance(p, ClusterEnvironment) for p in plugins):
                kwargs["plugins"] = [*plugins, SLURMEnvironment(auto_requeue=False)]
        built = super().instantiate_trainer(**kwargs)
        if type(built.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user configured
            built.strategy.checkpoint_io = WholeFileCheckpointIO()
        return built

    def _loggers(self, root: Path) -> list[pl.loggers.Logger]:
        """TensorBoard and CSV in one ``version_N`` folder (CSVLogger warns of sharing it: sharing is the point):
        a new one, or the one of the checkpoint ``fit`` resumes, whose metrics go on from where it was written."""
        path = Path(self.config.fit.ckpt_path) if self.subcommand == "fit" and self.checkpoint else None
        folder = path.resolve().parent.parent if path and path.parent.name == "checkpoints" else None
        rows, step = [], None
        if folder is None or folder.parent != (root / self.name).resolve() or self.config.fit.new_run_folder:
            folder = root / self.name / f"version_{self._claim_version(root / self.name)}"
        else:  # metrics.csv keeps the rows logged before the checkpoint; TensorBoard hides those after
            metrics = (folder / "metrics.csv").read_bytes() if (folder / "metrics.csv").is_file() else None
            self.continued = folder, set(folder.rglob("*")), metrics
            rows = kept_rows(self.checkpoint, metrics)
            step = max((int(row["step"]) for row in rows), default=-1) + 1
            # config.yaml stays the first part's; each resume's beside it (a second from the same step: "-2")
            resumed = f"config-resumed-at-step-{self.checkpoint['global_step']}"
            earlier = len(list(folder.glob(f"{resumed}*.yaml")))
            self.save_config_kwargs["config_filename"] = (
                f"{resumed}{f'-{earlier + 1}' if earlier else ''}.yaml"
            )
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        options = {"save_dir": root, "name": self.name, "version": int(folder.name.removeprefix("version_"))}
        logs = [TensorBoardLogger(**options, default_hp_metric=False, purge_step=step), CSVLogger(**options)]
        for row in rows if rank_zero_only.rank == 0 else ():  # the CSV writer deleted the file: rows go back
            logs[1].experiment.log_metrics(
                {k: v for k, v in row.items() if v and k != "step"}, int(row["step"])
            )
        logs[1].save()
        if SLURMEnvironment.detect() and rank_zero_only.rank == 0:  # what a requeued job resumes from
            (folder / "slurm_job").write_text(_slurm_job())
        return logs

    def _claim_version(self, folder: Path) -> int:
        """The next free ``version_N``, made at once: ``mkdir`` makes a folder or fails, so two runs started together
        never share one. Processes other than the first only name it (the checkpoints follow the first's folder)."""
        taken = [int(m[1]) for p in _listing(folder) if (m := re.fullmatch(r"version_(\d+)", p.name))]
        version = max(taken, default=-1) + 1
        if rank_zero_only.rank != 0 or int(os.environ.get("NODE_RANK", 0)) != 0:
            return version
        self.made = [p for p in (folder, *folder.parents) if not p.exists()]
        while self.run_folder is None:
            try:
                (folder / f"version_{version}").mkdir(parents=True)
                self.run_folder = folder / f"version_{version}"
            except FileExistsError:
                version += 1
            except OSError as error:
                fix = "run from a writable folder, or point --trainer.default_root_dir at one"
                raise UserError(
                    f"The run's folder cannot be made in {folder} ({error.strerror}): {fix}."
                ) from None
        return version

    def remove_what_was_written(self) -> None:
        """After a mistake: the claimed run folder (unless it holds a checkpoint) and the folders made for it; in the
        folder a resume continues, what it added, and its ``metrics.csv`` as it was."""
        if self.run_folder is not None and not any(self.run_folder.rglob("*.ckpt")):
            shutil.rmtree(self.run_folder, ignore_errors=True)
        for folder in self.made:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if self.continued is not None:
            folder, before, metrics = self.continued
            for path in set(folder.rglob("*")) - before:
                if path.is_file():
                    path.unlink()
            if metrics is not None:
                (folder / "metrics.csv").write_bytes(metrics)

    def after_fit(self) -> None:
        """1.x's ``trainer.test()`` loaded the best model; in 2.x that is its path, given. A stop asked for after the
        last batch let training finish: then the test is skipped and the stop reported."""
        stop, trainer = next(c for c in self.trainer.callbacks if isinstance(c, GracefulStop)), self.trainer
        if stop.signum is not None:
            last = next(c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint))
            raise Interrupted(stop.signum, last.best_model_path or None)
        if self.config.fit.test_after_fit and type(self.model).test_step is not pl.LightningModule.test_step:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            # the module's own callbacks, which test attaches again: else Lightning says it overrides them
            own = {type(callback) for callback in self.model.configure_callbacks()}
            trainer.callbacks = [c for c in trainer.callbacks if type(c) not in own]
            trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def _listing(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def _newest(folders: Iterable[Path]) -> str | None:
    """The newest ``last.ckpt`` or ``interrupted.ckpt`` of the run folders."""
    found = [
        p for f in folders for p in (f / "checkpoints").glob("*.ckpt") if p.stem in ("last", "interrupted")
    ]
    return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None


def kept_rows(checkpoint: dict[str, Any], metrics: bytes | None) -> list[dict[str, str]]:
    """The rows of a run's ``metrics.csv`` that a run resumed from ``checkpoint`` keeps: those on disk when it was
    written (``MetricsOnDisk``) and the epoch's own logged after it, before the step the resumed run logs at next.
    That step is in Lightning's checkpoint under a private name (``tests/test_private.py``)."""
    step = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]
    rows, written = (
        list(csv.DictReader((metrics or b"").decode().splitlines())),
        checkpoint.get("metrics_rows", 0),
    )
    return [row for i, row in enumerate(rows) if i < written or int(row["step"]) < step]


def _slurm_job() -> str:
    """This SLURM job's id as ``scontrol`` takes it (``<array job>_<task>`` in a job array)."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]


def _ours(marker: Path) -> bool:
    """Whether a run folder's ``slurm_job`` names this job: a requeued job resumes its own run, no other."""
    return marker.read_text() == _slurm_job()


def _requeue(saved: str) -> str:
    """``scontrol requeue`` this job, so that SLURM starts it again with the same id; what happens next, in words."""
    try:
        done = subprocess.run(
            ["scontrol", "requeue", _slurm_job()], capture_output=True, text=True, timeout=60
        )
        failure = (done.stderr or done.stdout).strip() if done.returncode else ""
    except (OSError, subprocess.SubprocessError) as error:
        failure = str(error)
    if failure:
        return f"SLURM job {_slurm_job()} could not be requeued ({failure}): resume with `fit --ckpt_path={saved}`"
    return f"SLURM job {_slurm_job()} is requeued and resumes from it by itself"


class MetricsOnDisk(Callback):
    """The loggers' files flushed as each checkpoint is written and each epoch starts, so that a run killed later
    keeps what was logged before (CSV flushes every 100 steps otherwise); each checkpoint says how many rows of
    ``metrics.csv`` that is, for the resume that continues the run's folder."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        self.on_train_epoch_start(trainer, pl_module)
        files = [Path(log.log_dir) / "metrics.csv" for log in trainer.loggers if isinstance(log, CSVLogger)]
        checkpoint["metrics_rows"] = sum(len(f.read_text().splitlines()) - 1 for f in files if f.is_file())

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.save()


class RunConfig(SaveConfigCallback):
    """``config.yaml`` in the run's folder (Lightning's ``SaveConfigCallback``), also as an artifact of each tracker's
    run; and TensorBoard's HParams tab: the model's and the data's settings, beside the run's validation metrics
    (their latest values), once its first validation has ended."""

    hparams_written = False  # the HParams tab's entry, once per run

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.folder = Path(trainer.log_dir or ".")  # every process: log_dir is a broadcast
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        to_trackers(trainer, self.folder / self.config_filename)  # the first process only, once written

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.on_fit_end(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The HParams tab's entry, once: TensorBoard reads the first, and each metric's latest value."""
        if self.hparams_written or not trainer.is_global_zero:
            return
        self.hparams_written = True
        model = {k: v for k, v in pl_module.hparams_initial.items() if not k.startswith("_")}
        settings = _flat({"model": model, "data": self.config.data.as_dict()})
        metrics = dict.fromkeys(k for k in trainer.callback_metrics if k.startswith("val/"))
        experiment, session, _ = hparams(settings, metrics)
        for writer in tensorboards(trainer):
            writer.file_writer.add_summary(experiment)
            writer.file_writer.add_summary(session)


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, float | str]:
    """Nested settings as TensorBoard's HParams tab takes them: ``data.batch_size`` (the flag's name), a number or
    text."""
    flat: dict[str, float | str] = {}
    for key, value in settings.items():
        name = prefix if key == "init_args" else f"{prefix}.{key}".lstrip(".")
        if isinstance(value, dict):
            flat |= _flat(value, name)
        else:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            flat[name] = value if number else str(value)
    return flat


class BestCheckpoint(ModelCheckpoint):
    """The ``checkpoint`` section: ``ModelCheckpoint``, except that a run that logs no metric of its monitor's stage
    (the GAN without a judge) keeps no best file and says so, where ``ModelCheckpoint`` would stop it."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stage = f"{self.monitor}".split("/")[0] + "/"
        logged = any(name.startswith(stage) for name in trainer.callback_metrics)
        if self.monitor and self.save_top_k and not trainer.sanity_checking and not logged:
            rank_zero_info(f"No {self.monitor} is logged: no best checkpoint is kept, only last.ckpt.")
            self.save_top_k = 0
        super().on_validation_end(trainer, pl_module)


class PredictionWriter(BasePredictionWriter):
    """What ``predict`` returns, in the run's folder: as the datamodule writes it where it can (one's own data,
    ``datamodules/own.py``), else in ``predictions.pt`` (one file per process)."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer: pl.Trainer, module: Any, predictions: Any, indices: Any) -> None:
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        path = folder / f"predictions{f'-rank{trainer.global_rank}' if trainer.world_size > 1 else ''}.pt"
        folder.mkdir(parents=True, exist_ok=True)
        if hasattr(trainer.datamodule, "write_predictions"):  # one's own data: a CSV, or images
            path = trainer.datamodule.write_predictions(predictions, folder)
        else:
            if predictions and all(isinstance(p, torch.Tensor) for p in predictions):
                predictions = torch.cat(predictions)
            torch.save({"predictions": predictions, "batch_indices": indices}, path)
        module.print(f"Predictions written to {path}")
