"""Exact resume: a run resumed from any checkpoint these leave, after any kind of stop, ends with the weights of one
that never stopped. Each works in a plain ``Trainer``: ``callbacks=[RandomState(), LastCheckpoint(),
ResumeSettings(), GracefulStop()]`` and a training loader from ``resumable_loader``."""

from __future__ import annotations

import itertools
import random
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, Checkpoint, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from shared.errors import NAMES, Interrupted, UserError


class RandomState(Callback):
    """The global random states in every checkpoint: noise drawn in a step (GAN latents, dropout) goes on after a
    resume as if the run had never stopped."""

    def state_dict(self) -> dict[str, Any]:
        name, keys, *rest = np.random.get_state()
        numpy = [name, torch.from_numpy(keys.astype(np.int64)), *rest]  # weights_only loads no numpy array
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": numpy, "python": random.getstate()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        name, keys, *rest = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        random.setstate(state_dict["python"])


class EpochShuffle(RandomSampler):
    """A shuffle that depends only on ``seed + epoch``, as ``DistributedSampler``'s (which DDP puts in its place);
    a plain one draws from the global random state, and a resumed run would see other batches."""

    def __init__(self, data_source: Any, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls it before each epoch
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())


class InOrder(SequentialSampler):
    """Indices in order, knowing the epoch, by which ``ResumableLoader`` tells epochs apart."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


# what must not change for a resume to skip the batches already served: each as the refusal names it
SAME = [("batch_size", "batch_size={} (this run: {})"), ("samples", "{} training samples (this run: {})")]
SAME += [("seed", "seed={} (this run: {})"), ("shuffle", "shuffle={} (this run: {})")]


class ResumableLoader(DataLoader):
    """A training loader that a checkpoint written mid-epoch resumes exactly. Lightning saves its ``state_dict()``
    (the epoch, the batches served in it, what orders them) and hands it back on resume; that epoch then skips those
    batches, where a plain loader starts it over, or refuses to go on when the batches would hold other samples (a
    new batch size, seed, shuffle, data set or split). ``stop`` (set by ``GracefulStop``) stops it before its next
    batch: there every batch before is done and counted, and the next not begun."""

    stop: int | None = None  # a signal number
    _epoch, _served, _resume = None, 0, None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batches": self._served, **self._order()}

    def _order(self) -> dict[str, Any]:
        """What decides the samples of each batch (``DistributedSampler`` too has a seed and a shuffle)."""
        shuffle = isinstance(self.sampler, RandomSampler) or getattr(self.sampler, "shuffle", False)
        seed = getattr(self.sampler, "seed", None) if shuffle else None  # in order: no seed to keep
        return {"batch_size": self.batch_size, "samples": len(self.dataset), "seed": seed, "shuffle": shuffle}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)

    def __iter__(self) -> Iterator[Any]:
        return self._serve()

    def _serve(self) -> Iterator[Any]:
        # runs at the first batch, after the Trainer set the sampler's epoch (DDP's sampler has one too); a resumed
        # Trainer calls iter() before that, and worker processes take the epoch's order as their iterator is made
        self._epoch, resume, self._resume = getattr(self.sampler, "epoch", None), self._resume, None
        same = resume is not None and self._epoch is not None and resume["epoch"] == self._epoch
        self._served = resume["batches"] if same else 0
        order = self._order()  # (an old checkpoint has none of these: nothing to compare)
        before = {k: v for k, v in (resume or {}).items() if k in order and None not in (v, order[k])}
        changed = [f.format(before[k], order[k]) for k, f in SAME if before.get(k, order[k]) != order[k]]
        if changed and self._served:
            at = f"The checkpoint stopped {self._served} batches into epoch {self._epoch} with {', '.join(changed)}"
            fix = "its data set, split, batch_size, seed and shuffle, or from a checkpoint written at an epoch's end"
            raise UserError(f"{at}: resume with {fix}.")
        for batch in itertools.islice(super().__iter__(), self._served, None):
            if ResumableLoader.stop is not None:
                raise Interrupted(ResumableLoader.stop)
            self._served += 1
            yield batch


def resumable_loader(
    dataset: Dataset, batch_size: int, seed: int, shuffle: bool, **kwargs: Any
) -> DataLoader:
    """The training loader: shuffled by ``seed + epoch`` or in order, with its own generator (without one, every
    ``iter()`` draws its workers' seed from the global random state)."""
    sampler, generator = EpochShuffle(dataset, seed) if shuffle else InOrder(dataset), torch.Generator()
    return ResumableLoader(
        dataset, batch_size, sampler=sampler, generator=generator.manual_seed(seed), **kwargs
    )


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every training epoch (``save_last`` writes it only with a monitored checkpoint)."""

    def __init__(self) -> None:
        super().__init__(filename="last", enable_version_counter=False, save_on_train_epoch_end=True)


class ResumeSettings(Callback):
    """On resume, optimizers and schedules keep this run's settings (learning rates, a schedule's length) and take
    only their progress from the checkpoint (Adam's moments, the schedule's position), where Lightning restores
    both. The learning rate is this run's schedule replayed to the saved position, bit for bit."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after configure_optimizers, before the checkpoint is restored
        self.groups = [[{**group, "params": None} for group in o.param_groups] for o in trainer.optimizers]
        self.schedules = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        for optimizer, groups in zip(trainer.optimizers, self.groups, strict=True):
            for group, settings in zip(optimizer.param_groups, groups, strict=False):  # later groups: theirs
                group.update({**settings, "params": group["params"]})
        for config, settings in zip(trainer.lr_scheduler_configs, self.schedules, strict=True):
            if isinstance(scheduler := config.scheduler, LRScheduler):
                steps = scheduler.last_epoch
                scheduler.load_state_dict(settings)
                with warnings.catch_warnings(
                    action="ignore"
                ):  # "lr_scheduler.step() before optimizer.step()"
                    for _ in range(steps):
                        scheduler.step()


class GracefulStop(Checkpoint):
    """Ctrl-C or SIGTERM during ``fit``: the batch under way finishes, ``interrupted.ckpt`` is saved beside
    ``last.ckpt``, ``Interrupted`` is raised. A second Ctrl-C stops at once, saving nothing.

    Mid-step the weights, the optimizer and the loops' counters disagree; they agree, and Lightning resumes
    exactly, where the training loader hands out its next batch and at the end of a mid-epoch validation: the
    stop comes at the first of these (between epochs that state is ``last.ckpt``, copied). Under DDP the
    processes agree after every batch (one all-reduce). A stop after the last batch lets ``fit`` finish
    (``signum`` tells). Other loaders: Lightning's own handling. A ``Checkpoint``: it runs after the others."""

    filename = "interrupted.ckpt"

    def __init__(self) -> None:
        self.signum, self._done, self._previous = None, 0, {}  # the signal; batches done this epoch; handlers

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signum = ResumableLoader.stop = None
        main = threading.current_thread() is threading.main_thread()
        if isinstance(trainer.train_dataloader, ResumableLoader) and main:
            self._previous = {s: signal.signal(s, self._request) for s in NAMES}

    def _request(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            self.on_train_end()
            raise KeyboardInterrupt
        if self.signum is None and rank_zero_only.rank == 0:
            saving = (
                "stopping after this batch and saving the state (Ctrl-C again stops at once, without saving)"
            )
            print(f"\n{NAMES[signum]}: {saving}.", file=sys.stderr, flush=True)
        self.signum = self.signum or signum

    def _agreed(self, trainer: pl.Trainer) -> bool:
        return trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._done = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._done = args[-1] + 1  # the batch's index: counted from the epoch's start, resumed or not
        if self._agreed(trainer):
            ResumableLoader.stop = self.signum or signal.SIGTERM

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self._agreed(trainer):
            ResumableLoader.stop = self.signum or signal.SIGTERM  # after the epoch's end: before the next
            if 0 < self._done < trainer.num_training_batches:  # mid-epoch: Lightning resumes from here
                raise Interrupted(ResumableLoader.stop, self._save(trainer))

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.on_train_end()
        if isinstance(exception, Interrupted) and exception.saved is None and trainer.global_step > 0:
            exception.saved = self._save(trainer)  # the loader's stop

    def _save(self, trainer: pl.Trainer) -> str:
        last = next((c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)
        path = Path(last.dirpath if last else trainer.default_root_dir) / self.filename
        partial = path.with_name(f".{path.name}.partial")
        if self._done or not (last and last.best_model_path):
            trainer.save_checkpoint(path, weights_only=False)  # (unsaid, Lightning says it defaults)
        elif trainer.is_global_zero:  # between epochs: the last.ckpt just written is this state
            shutil.copyfile(last.best_model_path, partial)
            partial.replace(path)
        return str(path)

    def on_train_end(self, *args: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous, ResumableLoader.stop = {}, None
