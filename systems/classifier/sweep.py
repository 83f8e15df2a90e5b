"""``python -m systems.classifier.sweep --trials=20``: a hyper-parameter search with Optuna (``pip install -e
".[sweep]"``), each trial an ordinary ``fit`` run in its own ``lightning_logs/classifier/version_N``.

It takes the same ``config.yaml`` and flags as ``train``; trial 0 of a new study runs them as given, the others
draw ``SEARCH_SPACE`` with Optuna's TPE sampler. After each epoch's validation the trial reports the checkpoint's
monitor (``val/acc``) to a median pruner, which stops a trial that trails the median of earlier trials at that
epoch. The study lives in a SQLite file: run the same command again and it goes on to ``--trials`` finished
trials; a trial stopped by Ctrl-C is recorded as failed (its run folder keeps ``interrupted.ckpt``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import ArgsType, LightningArgumentParser

from shared.cli import BestCheckpoint, SystemCLI
from shared.errors import UserError, reported, require
from systems.classifier.module import Classifier
from systems.classifier.train import LINKS

if TYPE_CHECKING:
    import optuna

# the model's arguments that are searched, and how: (low, high, log scale); width is an integer
SEARCH_SPACE = {"lr": (3e-4, 3e-2, True), "weight_decay": (1e-6, 1e-1, True), "dropout": (0.0, 0.5, False)}
SEARCH_SPACE["width"] = (8, 64, True)
SWEEP_FLAGS = ("trials", "study", "startup_trials", "warmup_epochs")


class Pruning(Callback):
    """After each validation, the monitored metric goes to the trial; ``optuna.TrialPruned`` stops the run when the
    pruner finds the trial worse than the earlier ones were at this epoch."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trial.set_user_attr("run", trainer.log_dir)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"{self.monitor}={float(value):.4f} at epoch {trainer.current_epoch}")


class TrialCLI(SystemCLI):
    """``train``'s command line for one trial: its own run folder, and the ``Pruning`` callback."""

    def __init__(self, trial: optuna.Trial, args: list[str]) -> None:
        self.trial = trial
        super().__init__(Classifier, "classifier", LINKS, args)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(Pruning(self.trial, self.config.fit.checkpoint.monitor))
        return trainer


class SweepCLI(SystemCLI):
    """``SystemCLI`` without subcommands, plus the sweep's flags; it only reads and checks the configuration (the
    model and data are built once to check their values; each trial builds its own Trainer)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--trials", type=int, default=20, help="finished trials (complete or pruned) to reach"
        )
        parser.add_argument(
            "--study",
            default="lightning_logs/classifier/sweep.db",
            help="the study's SQLite file, made or continued",
        )
        parser.add_argument(
            "--startup_trials", type=int, default=3, help="trials to finish before the pruner stops any"
        )
        parser.add_argument(
            "--warmup_epochs", type=int, default=2, help="epochs of each trial that the pruner never stops"
        )

    def instantiate_trainer(self, **kwargs: Any) -> None:
        """No Trainer here: it would claim a run folder."""


def main(args: ArgsType = None) -> optuna.Study:
    try:
        import optuna
    except ImportError:
        with reported():
            raise UserError(
                'The sweep needs Optuna: pip install -e ".[sweep]" (or pip install optuna).'
            ) from None
    cli = SweepCLI(Classifier, "classifier", LINKS, args, run=False)
    with reported():
        return sweep(cli, optuna)


def sweep(cli: SweepCLI, optuna: Any) -> optuna.Study:
    config = cli.config
    require(config.trials >= 1, f"--trials={config.trials} runs nothing: set it to 1 or more.")
    monitor, mode = config.checkpoint.monitor, config.checkpoint.mode
    require(
        monitor is not None,
        "The sweep ranks trials by checkpoint.monitor, which is unset: set it, e.g. val/acc.",
    )
    require(
        config.trainer.fast_dev_run in (False, 0, None),
        "fast_dev_run logs no metric to rank trials by: drop it.",
    )
    require(
        config.trainer.limit_val_batches != 0,
        f"--trainer.limit_val_batches=0 validates nothing, and the sweep ranks trials by {monitor}: raise it.",
    )
    base = cli.parser.dump(config.clone(), skip_check=True)
    base = yaml.safe_dump({k: v for k, v in yaml.safe_load(base).items() if k not in SWEEP_FLAGS})
    path = Path(config.study)
    made = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=f"sqlite:///{path}",
        study_name="classifier",
        direction="maximize" if mode == "max" else "minimize",
        load_if_exists=True,
    )
    if "config" not in study.user_attrs:  # a new study (or one made with Optuna's API, to enqueue trials)
        study.set_user_attr("config", base)
        if not study.trials:  # trial 0: the flags as given
            study.enqueue_trial({name: config.model[name] for name in SEARCH_SPACE})
    elif study.user_attrs["config"] != base:
        refusal = (
            f"{path} holds a study of other settings than these flags give (its trials would not compare)"
        )
        raise UserError(f"{refusal}: pass the same flags as its first run, or another --study file.")
    # a sampler seeded by the trials so far: a continued study does not draw its first trials again
    study.sampler = optuna.samplers.TPESampler(seed=(config.seed_everything or 0) + len(study.trials))
    study.pruner = optuna.pruners.MedianPruner(config.startup_trials, config.warmup_epochs)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    while len(study.get_trials(states=finished)) < config.trials:
        run_trial(study, base, path, made, optuna)
    best = study.best_trial
    folder = best.user_attrs["run"]
    print(
        f"Best of {len(study.get_trials(states=finished))} trials: trial {best.number}, {monitor} {best.value:.4f}, "
        f"{best.params}; its run is {folder}: train with `python -m systems.classifier.train --config "
        f"{folder}/config.yaml`."
    )
    return study


def run_trial(study: optuna.Study, base: str, path: Path, made: list[Path], optuna: Any) -> None:
    """One trial: a ``fit`` run with the trial's values, recorded in the study however it ends."""
    trial = study.ask()
    try:
        flags = [f"--model.{name}={suggest(trial, name, *space)}" for name, space in SEARCH_SPACE.items()]
        trainer = TrialCLI(trial, ["fit", "--config", base, *flags]).trainer
        best = next(c for c in trainer.callbacks if isinstance(c, BestCheckpoint))
        value = float(best.best_model_score)
        for name, tested in trainer.callback_metrics.items():
            if name.startswith("test/"):
                trial.set_user_attr(name, float(tested))
    except optuna.TrialPruned as pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        print(f"Trial {trial.number} pruned: {pruned}.")
        return
    except BaseException as stop:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        mistake = isinstance(stop, SystemExit) and stop.code == 2
        if mistake and made and len(study.trials) == 1:
            for written in made:  # a mistake in the flags, found by the first trial: nothing written
                if written.is_file():
                    written.unlink()
                elif written.is_dir() and not any(written.iterdir()):
                    written.rmdir()
        elif not mistake:  # Ctrl-C, SIGTERM, a failed write, a bug
            goes_on = "the same command goes on with the study"
            print(f"Trial {trial.number} is recorded as failed in {path}; {goes_on}.", file=sys.stderr)
        raise
    study.tell(trial, value)
    print(f"Trial {trial.number}: {best.monitor} {value:.4f}, {trial.params}.")


def suggest(trial: optuna.Trial, name: str, low: float, high: float, log: bool) -> float | int:
    if isinstance(low, int):
        return trial.suggest_int(name, low, high, log=log)
    return trial.suggest_float(name, low, high, log=log)


if __name__ == "__main__":
    main()
