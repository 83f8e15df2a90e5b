"""MNIST and Fashion-MNIST through torchvision's own dataset classes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch.utils.data import TensorDataset
from torchvision.datasets import MNIST, FashionMNIST

from datamodules.common import ImageDataModule, fetch_or_explain, seeded_split, to_images

_DATASETS = {"mnist": MNIST, "fashion_mnist": FashionMNIST}
# per-channel mean and std of the 60,000 training images in [0, 1]
_STATS = {"mnist": ((0.1307,), (0.3081,)), "fashion_mnist": ((0.2860,), (0.3530,))}


class MNISTDataModule(ImageDataModule):
    """MNIST or Fashion-MNIST (28x28 grey images, 10 classes), downloaded into ``data_dir`` when online.

    Args:
        dataset: ``mnist`` or ``fashion_mnist``.
        data_dir: folder holding ``MNIST/raw`` (or ``FashionMNIST/raw``) with the four idx files.
        download: download the files in ``prepare_data`` when they are missing.
        download_timeout: seconds a connection may stall before the download is given up.
        batch_size: images per batch.
        image_size: side length to resize to (e.g. 32 for a DCGAN), or null to keep 28.
        value_range: the pixel range the images come in: [0, 1] for classifiers, [-1, 1] for a GAN.
        val_size: images of the 60,000 training images held out for validation.
        shuffle: shuffle the training set each epoch (seeded by ``seed`` and the epoch).
        num_workers: DataLoader worker processes (the data is a tensor in memory: 0 is fastest).
        seed: seed of the train/val split and of the shuffle.
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
        shuffle: bool = True,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__(batch_size, num_workers, shuffle, seed, image_size, value_range)
        if dataset not in _DATASETS:
            raise ValueError(f"dataset must be one of {sorted(_DATASETS)}, got {dataset!r}.")
        self.dataset = dataset
        self.data_dir = data_dir
        self.download = download
        self.download_timeout = download_timeout
        self.val_size = val_size
        self.pixel_mean, self.pixel_std = _STATS[dataset]
        side = image_size or 28
        self.dims = (1, side, side)

    @property
    def raw_folder(self) -> Path:
        return Path(self.data_dir) / _DATASETS[self.dataset].__name__ / "raw"

    def _file_names(self) -> list[str]:
        return [Path(name).stem for name, _ in _DATASETS[self.dataset].resources]

    def _files_present(self) -> bool:
        return all((self.raw_folder / name).is_file() for name in self._file_names())

    def _missing_error(self, reason: str) -> FileNotFoundError:
        files = ", ".join(self._file_names())
        return FileNotFoundError(
            f"{_DATASETS[self.dataset].__name__} is not in {self.raw_folder} and {reason}. Put the four idx "
            f"files there ({files}), or train offline on the bundled digits with "
            "--data=datamodules.DigitsDataModule."
        )

    def prepare_data(self) -> None:
        """Download once per node; offline, fail with one sentence instead of a stack of retries."""
        if self._files_present():
            return

        def fetch() -> None:
            for train in (True, False):
                _DATASETS[self.dataset](self.data_dir, train=train, download=True)

        fetch_or_explain(self.download, self.download_timeout, fetch, self._missing_error)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if not self._files_present():
            raise self._missing_error("prepare_data has not downloaded it")
        cls = _DATASETS[self.dataset]
        train, test = (cls(self.data_dir, train=flag, download=False) for flag in (True, False))

        def as_dataset(split: MNIST) -> TensorDataset:
            pixels = split.data.unsqueeze(1).float() / 255.0
            return TensorDataset(to_images(pixels, self.image_size, self.value_range), split.targets.long())

        full_train = as_dataset(train)
        self.train_set, self.val_set = seeded_split(
            full_train, [len(full_train) - self.val_size, self.val_size], self.seed
        )
        self.test_set = as_dataset(test)
