"""MNIST and Fashion-MNIST through torchvision's own dataset classes."""

from __future__ import annotations

import gzip
import math
import os
import shutil
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Subset, TensorDataset
from torchvision.datasets import MNIST, FashionMNIST

from datamodules.common import ImageDataModule, seeded_split, small_affine, to_images
from shared.downloads import fetch_or_explain
from shared.errors import UserError, require

_DATASETS = {"mnist": MNIST, "fashion_mnist": FashionMNIST}
# per-channel mean and std of the 60,000 training images in [0, 1]
_STATS = {"mnist": ((0.1307,), (0.3081,)), "fashion_mnist": ((0.2860,), (0.3530,))}
# Debian's dataset-fashion-mnist puts the whole of Fashion-MNIST here (70,000 images, MIT): read offline
PACKAGED = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}


class MNISTDataModule(ImageDataModule):
    """MNIST or Fashion-MNIST (28x28 grey images, 10 classes), downloaded into ``data_dir`` when online;
    Fashion-MNIST is unpacked from Debian's ``dataset-fashion-mnist`` where that is installed, offline.

    Args:
        dataset: ``mnist`` or ``fashion_mnist``.
        data_dir: folder holding ``MNIST/raw`` (or ``FashionMNIST/raw``) with the four idx files.
        download: download the files in ``prepare_data`` when they are missing.
        download_timeout: seconds a connection may stall before the download is given up.
        batch_size: images per batch.
        image_size: side length to resize to (e.g. 32 for a DCGAN), or null to keep 28.
        value_range: the pixel range the images come in: [0, 1] for classifiers, [-1, 1] for a GAN.
        val_size: images of the 60,000 training images held out for validation.
        train_fraction: train on this share of the rest, ``round(train_fraction * n)`` images, the classes taking
            turns (``labelled_subset``): e.g. 0.01 for 1% of the labels. Validation and test stay whole.
        shuffle: shuffle the training set each epoch (seeded by ``seed`` and the epoch).
        num_workers: DataLoader worker processes (the data is a tensor in memory: 0 is fastest).
        seed: seed of the train/val split and of the shuffle.
        augment: turn, shift and scale each training image a little (``small_affine``), anew each epoch.
    """

    num_classes = 10

    def __init__(
        self,
        dataset: Literal["mnist", "fashion_mnist"] = "mnist",
        data_dir: str = "data",
        download: bool = True,
        download_timeout: float = 20.0,
        batch_size: int = 128,
        image_size: int | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
        val_size: int = 5000,
        train_fraction: float = 1.0,
        shuffle: bool = True,
        num_workers: int = 0,
        seed: int = 42,
        augment: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, shuffle, seed, image_size, value_range)
        self.augmentation = small_affine(self.value_range) if augment else None
        require(val_size >= 0, f"data.val_size must be 0 or more, got {val_size}.")
        require(0 < train_fraction <= 1, f"data.train_fraction must be in (0, 1], got {train_fraction}.")
        self.dataset = dataset
        self.data_dir = data_dir
        self.download = download
        self.download_timeout = download_timeout
        self.val_size, self.train_fraction = val_size, train_fraction
        self.pixel_mean, self.pixel_std = _STATS[dataset]
        self.class_names = FashionMNIST.classes if dataset == "fashion_mnist" else [str(d) for d in range(10)]
        side = image_size or 28
        self.dims = (1, side, side)

    @property
    def raw_folder(self) -> Path:
        return Path(self.data_dir) / _DATASETS[self.dataset].__name__ / "raw"

    def _file_names(self) -> list[str]:
        return [Path(name).stem for name, _ in _DATASETS[self.dataset].resources]

    def _files_present(self) -> bool:
        return all((self.raw_folder / name).is_file() for name in self._file_names())

    def _missing_error(self, reason: str) -> UserError:
        files = ", ".join(self._file_names())
        package = "install Debian's dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`), "
        install = package if self.dataset in PACKAGED else ""
        return UserError(
            f"{_DATASETS[self.dataset].__name__} is not in {self.raw_folder} and {reason}. Put the four idx "
            f"files there ({files}), {install}or train offline on the bundled digits with "
            "--data=datamodules.DigitsDataModule."
        )

    def prepare_data(self) -> None:
        """Unpack ``.gz`` files found in the raw folder or the system package's, else download once per node;
        offline, fail with one sentence instead of a stack of retries, leaving no empty folders behind."""
        folders = [self.raw_folder, PACKAGED.get(self.dataset, self.raw_folder)]
        for name in self._file_names():
            packed = next((f / f"{name}.gz" for f in folders if (f / f"{name}.gz").is_file()), None)
            if packed is not None and not (self.raw_folder / name).is_file():
                self.raw_folder.mkdir(parents=True, exist_ok=True)
                _gunzip(packed, self.raw_folder / name)
        if self._files_present():
            return

        def fetch() -> None:
            for train in (True, False):
                _DATASETS[self.dataset](self.data_dir, train=train, download=True)

        fetch_or_explain(fetch, self._missing_error, self.raw_folder, self.download_timeout, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if not self._files_present():
            raise self._missing_error("prepare_data has not downloaded it")
        for name in self._file_names():
            check_idx_file(self.raw_folder / name)
        cls = _DATASETS[self.dataset]
        train, test = (cls(self.data_dir, train=flag, download=False) for flag in (True, False))

        def as_dataset(split: MNIST) -> TensorDataset:
            require(
                len(split.data) == len(split.targets),
                f"{self.raw_folder} holds {len(split.data)} images but {len(split.targets)} labels for one split: "
                "the files come from different data sets; download them again.",
            )
            pixels = split.data.unsqueeze(1).float() / 255.0
            return TensorDataset(to_images(pixels, self.image_size, self.value_range), split.targets.long())

        full_train = as_dataset(train)
        require(
            self.val_size < len(full_train),
            f"data.val_size={self.val_size} leaves none of the {len(full_train)} training images in "
            f"{self.raw_folder} to train on: set data.val_size below {len(full_train)}.",
        )
        self.train_set, self.val_set = seeded_split(
            full_train, [len(full_train) - self.val_size, self.val_size], self.seed
        )
        if self.train_fraction < 1:
            count = max(1, round(self.train_fraction * len(self.train_set)))
            labels = full_train.tensors[1][self.train_set.indices]
            self.train_set = Subset(self.train_set, labelled_subset(labels, count, self.seed).tolist())
        self.test_set = as_dataset(test)


def labelled_subset(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """The indices of ``count`` samples, the classes taking turns, each in a seeded random order: the same in every
    run and process, the classes as even as their sizes allow, and a smaller ``count`` a subset of a larger one's."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    turn = torch.empty_like(order)  # how many of its class come before a sample in that order
    for label in labels.unique():
        members = order[labels[order] == label]
        turn[members] = torch.arange(len(members))
    place = torch.empty_like(order)
    place[order] = torch.arange(len(order))
    return (turn * len(labels) + place).argsort()[:count]


def _gunzip(packed: Path, target: Path) -> None:
    """Unpack ``packed`` to ``target`` through a temporary file, so an interrupted unpack leaves no half file."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        with gzip.open(packed, "rb") as source, open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink)
    except (OSError, EOFError) as error:
        partial.unlink(missing_ok=True)
        raise UserError(
            f"{packed} cannot be unpacked ({error}): it is truncated or not gzip. Delete it and download again."
        ) from None
    os.replace(partial, target)


# the element type of an idx file, by the third byte of its magic number: its size in bytes
_IDX_TYPES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def check_idx_file(path: Path) -> None:
    """Refuse a file that is not a whole idx file (LeCun's format: a magic number, the sizes, the data)
    before torchvision reads it, whose own failures are a bare assertion or a reshape error."""
    data = path.read_bytes()
    fix = "delete it and download the data set again (or copy the original file there)"
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES or not 1 <= data[3] <= 4:
        raise UserError(f"{path} is not an idx file (its header is wrong): {fix}.")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    expected = 4 + 4 * len(dims) + math.prod(dims) * _IDX_TYPES[data[2]]
    if len(data) != expected:
        raise UserError(
            f"{path} holds {len(data):,} bytes where its header ({' x '.join(map(str, dims))}) promises "
            f"{expected:,}: it is truncated or damaged; {fix}."
        )
