"""What every image datamodule shares: seeded splits, a resumable shuffle, the loaders, the facts."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, random_split

from shared.errors import require


class EpochSeededRandomSampler(RandomSampler):
    """A shuffle whose order depends only on ``seed + epoch``, as ``DistributedSampler``'s does.

    A plain ``shuffle=True`` draws each epoch's order from the global random state, which a checkpoint
    does not hold: a run resumed at epoch 3 would see other batches than an uninterrupted one. The
    Trainer calls ``set_epoch`` before every epoch; under DDP it swaps this sampler (a
    ``RandomSampler``) for a ``DistributedSampler``, which is seeded the same way.
    """

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class EpochSequentialSampler(SequentialSampler):
    """Indices in order, with the epoch the Trainer set: ``ResumableDataLoader`` tells epochs apart by it."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ResumableDataLoader(DataLoader):
    """A DataLoader that a checkpoint written in the middle of an epoch resumes exactly.

    Resuming from such a checkpoint (``interrupted.ckpt``, ``every_n_train_steps``), Lightning 2.x counts
    the epoch on from the saved batch but a plain loader starts the epoch over: the resumed epoch sees its
    first batches a second time and never its last ones. Lightning keeps ``state_dict()`` of a training
    loader that has one in the checkpoint and hands it back on resume: this one records the epoch its
    sampler was set to and how many batches of it went out, and the first iterator of that same epoch
    after ``load_state_dict`` skips them. The skipped batches are still loaded (cheap for data in memory).
    Its sampler needs an ``epoch`` (``EpochSeededRandomSampler``, ``EpochSequentialSampler`` or the
    ``DistributedSampler`` that DDP puts in): without one, a finished epoch looks like an unfinished one
    and nothing is skipped.

    ``stop_point``, when set (the shared ``GracefulStop`` callback sets it), is called before each batch
    goes out: the one moment when every batch before it is done and counted, so a stop raised there
    leaves a state that resumes exactly.
    """

    _epoch: int | None = None
    _served = 0
    _resume_at: dict[str, Any] | None = None
    stop_point: Callable[[], None] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batches": self._served}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_at = dict(state_dict)

    def __iter__(self) -> Iterator[Any]:
        return self._serve(super().__iter__())

    def _serve(self, batches: Iterator[Any]) -> Iterator[Any]:
        # runs at the first batch, after the Trainer has set the sampler's epoch (it asks for iter() first)
        epoch = getattr(self.sampler, "epoch", None)
        resume, self._resume_at = self._resume_at, None
        same_epoch = resume is not None and epoch is not None and resume["epoch"] == epoch
        skip = resume["batches"] if same_epoch else 0
        self._epoch, self._served = epoch, skip
        for batch in itertools.islice(batches, skip, None):
            if self.stop_point is not None:
                self.stop_point()
            self._served += 1
            yield batch


def check_loader_arguments(batch_size: int, num_workers: int) -> None:
    """The loader arguments every datamodule takes, checked where they are given."""
    require(batch_size >= 1, f"data.batch_size must be 1 or more, got {batch_size}.")
    require(
        num_workers >= 0,
        f"data.num_workers must be 0 (load in the training process) or more, got {num_workers}.",
    )


def seeded_split(dataset: Dataset, fractions: Sequence[float], seed: int) -> list[Dataset]:
    """``random_split`` by fractions with its own seeded generator: one split in every process and run."""
    return random_split(dataset, list(fractions), generator=torch.Generator().manual_seed(seed))


def to_images(pixels: torch.Tensor, image_size: int | None, value_range: tuple[float, float]) -> torch.Tensor:
    """``(N, C, H, W)`` intensities in [0, 1] as float images of ``image_size`` px in ``value_range``."""
    images = pixels.float()
    if image_size is not None and image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True)
        images = images.clamp(0.0, 1.0)
    low, high = value_range
    return images * (high - low) + low


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    seed: int,
    train: bool,
    shuffle: bool = True,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """The one way the datamodules build a loader: a training loader that resumes mid-epoch exactly and
    shuffles by ``seed + epoch`` (or keeps order, with the epoch still known); evaluation loaders in order.
    """
    sampler = None
    if train:
        sampler = EpochSeededRandomSampler(dataset, seed) if shuffle else EpochSequentialSampler(dataset)
    # only the training loader's place is kept in checkpoints (the loops restart evaluation anyway)
    return (ResumableDataLoader if train else DataLoader)(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        # a loader without a generator draws its workers' base seed from the global random state at
        # every iter(): a run resumed mid-epoch would draw once more than the uninterrupted one
        generator=torch.Generator().manual_seed(seed),
    )


class ImageDataModule(pl.LightningDataModule):
    """Loaders and facts for a labelled image data set split into train, val and test.

    Subclasses build ``self.train_set``, ``self.val_set`` and ``self.test_set`` in ``setup`` and set
    the facts a model needs as attributes (``num_classes``, ``dims``, ``mean``, ``std``); the CLI
    links those into the model, so they are typed once.
    """

    # per-channel statistics of the raw pixels in [0, 1], mapped into ``value_range`` by ``mean``/``std``
    pixel_mean: tuple[float, ...] = (0.5,)
    pixel_std: tuple[float, ...] = (0.5,)

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        shuffle: bool,
        seed: int,
        image_size: int | None,
        value_range: tuple[float, float],
    ) -> None:
        super().__init__()
        check_loader_arguments(batch_size, num_workers)
        require(
            value_range[0] < value_range[1],
            f"data.value_range must be [low, high] with low < high, got {list(value_range)}: e.g. [-1, 1].",
        )
        require(
            image_size is None or image_size >= 1,
            f"data.image_size must be 1 or more, or null, got {image_size}.",
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed
        self.image_size = image_size
        self.value_range = tuple(value_range)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of the images this module yields (in ``value_range`` units)."""
        low, high = self.value_range
        return tuple(m * (high - low) + low for m in self.pixel_mean)

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation of the images this module yields."""
        low, high = self.value_range
        return tuple(s * (high - low) for s in self.pixel_std)

    def _loader(self, dataset: Dataset | None, train: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError(
                f"{type(self).__name__}.setup() has not built this split yet: call setup(stage) first."
            )
        return make_loader(dataset, self.batch_size, self.num_workers, self.seed, train, self.shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)
