"""What the datamodules share: loaders that resume exactly, seeded splits, images of a given size and range."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision.transforms import v2

from shared.errors import require
from shared.resume import resumable_loader


def check_loader_arguments(batch_size: int, num_workers: int) -> None:
    require(batch_size >= 1, f"data.batch_size must be 1 or more, got {batch_size}.")
    require(
        num_workers >= 0, f"data.num_workers must be 0 (load in this process) or more, got {num_workers}."
    )


def make_loader(
    data: Any, dataset: Dataset, train: bool = False, collate: Callable | None = None
) -> DataLoader:
    """A loader by the datamodule's ``batch_size``, ``num_workers``, ``shuffle``, ``seed``: the training one resumes
    exactly (``shared/resume.py``); each has its own generator (or every ``iter()`` draws from the global one)."""
    workers = {"num_workers": data.num_workers, "persistent_workers": data.num_workers > 0}
    settings = {"batch_size": data.batch_size, "collate_fn": collate, "pin_memory": torch.cuda.is_available()}
    if train:
        return resumable_loader(dataset, seed=data.seed, shuffle=data.shuffle, **settings, **workers)
    return DataLoader(dataset, generator=torch.Generator().manual_seed(data.seed), **settings, **workers)


def seeded_split(dataset: Dataset, fractions: Sequence[float], seed: int) -> list[Dataset]:
    """``random_split`` with its own seeded generator: the same split in every process and run."""
    return random_split(dataset, list(fractions), generator=torch.Generator().manual_seed(seed))


def to_images(pixels: torch.Tensor, image_size: int | None, value_range: tuple[float, float]) -> torch.Tensor:
    """``(N, C, H, W)`` intensities in [0, 1] as float images of ``image_size`` px in ``value_range``."""
    images = pixels.float()
    if image_size is not None and (image_size, image_size) != tuple(images.shape[-2:]):
        images = F.interpolate(images, (image_size, image_size), mode="bilinear", antialias=True).clamp(0, 1)
    return images * (value_range[1] - value_range[0]) + value_range[0]


def small_affine(value_range: tuple[float, float]) -> v2.Transform:
    """Handwriting's augmentation: a little rotation, shift and scale, the uncovered corners background."""
    return v2.RandomAffine(
        10, (0.1, 0.1), (0.9, 1.1), interpolation=v2.InterpolationMode.BILINEAR, fill=value_range[0]
    )


def crop_and_flip(side: int, value_range: tuple[float, float]) -> v2.Transform:
    """Photographs' augmentation: a random ``side``-px crop of the image padded by an eighth, a mirror half the time."""
    return v2.Compose(
        [v2.RandomCrop(side, padding=side // 8, fill=value_range[0]), v2.RandomHorizontalFlip()]
    )


class ImageDataModule(pl.LightningDataModule):
    """Labelled images in train, val and test splits, which subclasses make in ``setup``, with the facts a model
    needs (``num_classes``, ``dims``, and ``mean``, ``std`` from ``pixel_mean``, ``pixel_std`` in [0, 1]) and the
    ``class_names``; with ``augment``, the training batches go through ``augmentation``, a ``transforms.v2``
    pipeline. Its arguments are saved in every checkpoint, so that ``predict`` on one's own images can make them as
    these were (``datamodules/own.py``)."""

    pixel_mean: tuple[float, ...] = (0.5,)
    pixel_std: tuple[float, ...] = (0.5,)
    train_set = val_set = test_set = None
    augmentation: v2.Transform | None = None

    def __init__(
        self, batch_size: int, num_workers: int, shuffle: bool, seed: int, size: Any, value_range: Any
    ) -> None:
        super().__init__()
        # in checkpoints (``datamodule_hyper_parameters``), not in the logs: what predict on one's own images reads
        self.save_hyperparameters(logger=False)
        check_loader_arguments(batch_size, num_workers)
        low, high = value_range
        require(
            low < high,
            f"data.value_range must be [low, high] with low < high, got {[low, high]}: e.g. [-1, 1].",
        )
        require(size is None or size >= 1, f"data.image_size must be 1 or more, or null, got {size}.")
        self.batch_size, self.num_workers, self.shuffle, self.seed = batch_size, num_workers, shuffle, seed
        self.image_size, self.value_range = size, (low, high)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(
            m * (self.value_range[1] - self.value_range[0]) + self.value_range[0] for m in self.pixel_mean
        )

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(s * (self.value_range[1] - self.value_range[0]) for s in self.pixel_std)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Each training image transformed on its own, here in the training process, by draws from the global random
        state: every checkpoint holds that state (``RandomState``), so a resumed run draws what an uninterrupted one
        would, whatever the ``num_workers`` (a worker's own random state is in no checkpoint)."""
        if self.augmentation is None or self.trainer is None or not self.trainer.training:
            return batch
        images, labels = batch
        return torch.stack([self.augmentation(image) for image in images]), labels

    def train_dataloader(self) -> DataLoader:
        return make_loader(self, self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self, self.val_set)

    def test_dataloader(self) -> DataLoader:
        return make_loader(self, self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return make_loader(self, self.test_set)
