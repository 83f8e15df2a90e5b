"""Callbacks every system gets from the shared CLI; none of them depends on a particular logger."""

from __future__ import annotations

import copy
import os
import random
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Callback, Checkpoint, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info

from shared.errors import SIGNAL_NAMES, Interrupted, require


class MetricsTable(Callback):
    """Print the metrics logged in each training epoch as one table row (what pl_bolts'
    ``PrintTableMetricsCallback`` did).

    It reads ``trainer.callback_metrics``, never the step outputs, so a ``validation_step`` that returns
    something cannot break it. ``rows`` keeps every epoch's row.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row: dict[str, float] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for name, value in sorted(trainer.callback_metrics.items()):
            if name.endswith("_step") or value.numel() != 1:
                continue
            row[name.removesuffix("_epoch")] = value.item()
        self.rows.append(row)
        pl_module.print(format_row(row))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


def format_row(row: dict[str, float]) -> str:
    """A two-line table: the metric names over their values, each column as wide as its longer cell."""
    cells = [
        (name, f"{value:.4g}" if isinstance(value, float) else str(value)) for name, value in row.items()
    ]
    widths = [max(len(name), len(value)) for name, value in cells]
    header = " │ ".join(name.ljust(w) for (name, _), w in zip(cells, widths, strict=True))
    values = " │ ".join(value.ljust(w) for (_, value), w in zip(cells, widths, strict=True))
    return f"{header}\n{'─' * len(header)}\n{values}"


class RandomStateCallback(Callback):
    """Keep the global random states (torch, CUDA, numpy, random) in every checkpoint and restore them on
    resume, so that noise drawn in ``training_step`` (GAN latents, dropout) continues as if never stopped.

    The shared datamodules draw their shuffles and loader seeds from their own generators, so the global
    state is touched by the model alone.
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": _tuples_to_lists(random.getstate()),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_lists_to_tuples(state_dict["python"]))


def _tuples_to_lists(value: Any) -> Any:
    return [_tuples_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _lists_to_tuples(value: Any) -> Any:
    return tuple(_lists_to_tuples(v) for v in value) if isinstance(value, list) else value


class BestCheckpoint(ModelCheckpoint):
    """The ``checkpoint`` section of every config: ``ModelCheckpoint``, and one rule for a monitored metric
    that a validation did not log.

    A run that logs no metric of that stage at all has nothing to rank (the GAN without a judge): it keeps no
    best file, says so once, and ``last.ckpt`` remains. A name missing beside others of its stage is a
    mistake (``val/accc`` next to ``val/acc``), refused at the first validation with the names that exist,
    where ``ModelCheckpoint`` would raise an exception of several lines.
    """

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor and not trainer.sanity_checking and self.monitor not in trainer.callback_metrics:
            stage = self.monitor.split("/")[0] + "/"
            logged = sorted(k for k in trainer.callback_metrics if k.startswith(stage))
            require(
                not logged,
                f"checkpoint.monitor={self.monitor} is not logged by this run (it logs {', '.join(logged)}): "
                "set --checkpoint.monitor to one of those.",
            )
            if self.save_top_k != 0:
                rank_zero_info(f"No {self.monitor} is logged: no best checkpoint is kept, only last.ckpt.")
                self.save_top_k = 0
        super().on_validation_end(trainer, pl_module)


class LastCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt``: the state at the end of every training epoch, the file to resume from.

    Lightning 2.x writes ``save_last=True``'s ``last.ckpt`` only when its callback saves a top-k file, so a
    callback monitoring ``val/acc`` leaves ``last.ckpt`` at the best epoch, not the latest. This one
    monitors nothing and keeps one file; the configurable ``checkpoint`` callback keeps the best ones.
    (A subclass also gets its own ``state_key``, so both can live in one Trainer.)
    """

    def __init__(self) -> None:
        # at every training epoch's end even with check_val_every_n_epoch > 1, where ModelCheckpoint's
        # default would wait for the next validation
        super().__init__(
            filename="last", save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True
        )


class GracefulStop(Checkpoint):
    """Ctrl-C or SIGTERM (a cluster's pre-emption) during training: finish the batch in progress and its
    validation, save ``checkpoints/interrupted.ckpt``, and stop; the command then exits with 130 or 143.
    A second Ctrl-C stops at once and saves nothing (``last.ckpt`` of the last finished epoch remains).

    Why wait: in the middle of a step the weights, the optimizer and the loops' counters disagree, and a
    checkpoint of that moment resumes one batch off. The state is saved at the first of the moments that
    Lightning itself checkpoints at and resumes from exactly:

    - the end of a validation in the middle of an epoch (``val_check_interval``), where the monitored
      ``ModelCheckpoint`` saves too; this callback is a ``Checkpoint`` so that it runs after all others;
    - where the training loader hands out its next batch (``ResumableDataLoader.stop_point``): every batch
      so far is done and counted, the next one not begun. At the first batch of an epoch that state is the
      ``last.ckpt`` just written at the end of the epoch before, which ``interrupted.ckpt`` then copies.

    Under DDP the processes agree on the stop at each of these points (an all-reduce of one flag), so they
    all stop at the same batch. Exceptions save nothing: the state they leave is whatever the failing step
    made of it.
    """

    filename = "interrupted.ckpt"

    def __init__(self) -> None:
        self.signum: int | None = None
        self._trainer: pl.Trainer | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer, self.signum = trainer, None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._request) for s in (signal.SIGINT, signal.SIGTERM)}
        self.on_train_epoch_start(trainer, pl_module)  # a run resumed mid-epoch gets no epoch start hook

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # each epoch: DDP's sampler swap and reload_dataloaders_every_n_epochs give new loader objects
        for loader in _training_loaders(trainer):
            if hasattr(loader, "stop_point"):
                loader.stop_point = self._stop_point

    def _request(self, signum: int, frame: Any) -> None:
        resumable = any(hasattr(loader, "stop_point") for loader in _training_loaders(self._trainer))
        if signum == signal.SIGINT and (self.signum == signal.SIGINT or not resumable):
            self._restore()
            raise KeyboardInterrupt
        if (
            not resumable
        ):  # a loader of the user's own: Lightning's handling, which cannot wait for a boundary
            handler = self._previous.get(signum)
            if callable(handler):
                handler(signum, frame)
            return
        if self.signum is None and self._trainer.is_global_zero:
            print(
                f"\n{SIGNAL_NAMES.get(signum, signum)}: stopping after this batch and saving the state "
                "(Ctrl-C again stops at once, without saving).",
                file=sys.stderr,
                flush=True,
            )
        self.signum = self.signum or signum

    def _agreed(self) -> bool:
        return self._trainer is not None and self._trainer.strategy.reduce_boolean_decision(
            self.signum is not None, all=False
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a validation of this fit (not its sanity check) in the middle of an epoch; after an epoch's last
        # batch the state to keep is the one at the end of the epoch (last.ckpt), taken at the next batch
        if trainer.sanity_checking or self._trainer is not trainer:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.current.ready >= trainer.num_training_batches:
            return
        if self._agreed():
            raise Interrupted(self.signum or signal.SIGTERM, self._save(trainer))

    def _stop_point(self) -> None:
        if self._agreed():
            trainer = self._trainer
            between_epochs = trainer.fit_loop.epoch_loop.batch_progress.current.ready == 0
            saved = self._save(trainer, between_epochs) if trainer.global_step > 0 else None
            raise Interrupted(self.signum or signal.SIGTERM, saved)

    def _save(self, trainer: pl.Trainer, between_epochs: bool = False) -> str:
        last = next(c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint))
        path = Path(last.dirpath) / self.filename
        if between_epochs and last.best_model_path:
            if trainer.is_global_zero:  # the last.ckpt written at the end of the epoch before is this state
                partial = path.with_name(f".{path.name}.partial")
                shutil.copyfile(last.best_model_path, partial)
                os.replace(partial, path)
        else:
            trainer.save_checkpoint(path, weights_only=False)
        return str(path)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()


def _training_loaders(trainer: pl.Trainer | None) -> list[Any]:
    loaders = trainer.train_dataloader if trainer is not None else None
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return list(loaders.values())
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


class ResumeSettings(Callback):
    """On resume, optimizers and learning-rate schedulers take their settings from this run's configuration
    and their progress from the checkpoint.

    Settings are what the configuration decides: learning rates, weight decay, betas, a schedule's length
    (``T_max``, ``total_iters``: ``max_epochs`` or the number of steps) and end points. Progress is what
    training accumulated: Adam's moments and step counts, the schedule's position. Lightning restores both
    from the checkpoint, so without this a ``--model.lr`` or a longer ``--trainer.max_epochs`` given with
    ``--ckpt_path`` would be dropped without a word. When a setting differs, the learning rate becomes the
    one the new schedule gives at the saved position (extending 3 epochs of cosine to 6 trains epochs 3-5
    at the rates a 6-epoch run has there), and each change is printed. When nothing differs, nothing is
    touched, and the resumed run is bit-identical to one that never stopped.
    """

    def __init__(self) -> None:
        self.groups: list[list[dict[str, Any]]] = []
        self.schedules: list[dict[str, Any]] = []
        self.intervals: list[str] = []
        self.saved_intervals: list[str] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after configure_optimizers, before the checkpoint's optimizer and scheduler states are loaded
        self.groups = [[_without_params(g) for g in opt.param_groups] for opt in trainer.optimizers]
        self.schedules = [_schedule_settings(c.scheduler) for c in trainer.lr_scheduler_configs]
        self.intervals = [c.interval for c in trainer.lr_scheduler_configs]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        require(
            self.saved_intervals is None or self.saved_intervals == self.intervals,
            f"The checkpoint's schedule steps every {', '.join(self.saved_intervals or [])} and this run's every "
            f"{', '.join(self.intervals)}: its position cannot carry over. Resume with the same scheduler "
            "interval.",
        )
        scheduled = {id(c.scheduler.optimizer) for c in trainer.lr_scheduler_configs}
        changes = []
        for optimizer, wanted_groups in zip(trainer.optimizers, self.groups, strict=True):
            # a group added after configure_optimizers (staged unfreezing) has no configured settings here
            for group, wanted in zip(optimizer.param_groups, wanted_groups, strict=False):
                for key, value in wanted.items():
                    if key == "lr" and id(optimizer) in scheduled:
                        continue  # set from its schedule below
                    if not same_value(group.get(key), value):
                        changes.append(f"{group.get('name', 'optimizer')} {key} {group.get(key)} -> {value}")
                        group[key] = value
        for config, wanted in zip(trainer.lr_scheduler_configs, self.schedules, strict=True):
            scheduler = config.scheduler
            saved = _schedule_settings(scheduler)
            if same_value(saved, wanted):
                continue
            changes += [
                f"{type(scheduler).__name__} {k} {saved[k]} -> {wanted[k]}"
                for k in wanted
                if not same_value(saved.get(k), wanted[k])
            ]
            require(
                hasattr(scheduler, "_get_closed_form_lr"),
                f"{type(scheduler).__name__}'s settings changed on resume and it has no closed form to "
                "continue from: resume with the settings of the run that wrote the checkpoint.",
            )
            scheduler.__dict__.update(wanted)
            lrs = scheduler._get_closed_form_lr()
            for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr
            scheduler._last_lr = list(lrs)
        if changes:
            rank_zero_info("Resuming with this run's settings: " + "; ".join(changes))

    def state_dict(self) -> dict[str, Any]:
        return {"intervals": self.intervals}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.saved_intervals = state_dict.get("intervals")


def _without_params(group: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}


# what a scheduler's state holds besides its settings
_PROGRESS = frozenset(
    {"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial", "verbose"}
)


def _schedule_settings(scheduler: Any) -> dict[str, Any]:
    return {k: v for k, v in scheduler.state_dict().items() if k not in _PROGRESS}


def same_value(a: Any, b: Any) -> bool:
    """Equal once tuples, lists and tensors are compared as plain lists (a checkpoint keeps tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value.tolist() if isinstance(value, torch.Tensor) else value

    return plain(a) == plain(b)


class PredictionWriter(BasePredictionWriter):
    """Write what ``predict`` returns to ``predictions.pt`` in the run's folder (one file per process)."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Any,
        batch_indices: Any,
    ) -> None:
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = folder / f"predictions{suffix}.pt"
        if predictions and all(isinstance(p, torch.Tensor) for p in predictions):
            predictions = torch.cat(predictions)
        torch.save({"predictions": predictions, "batch_indices": batch_indices}, path)
        pl_module.print(f"Predictions written to {path}")
