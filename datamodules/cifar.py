"""CIFAR-10 through torchvision's own dataset class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset
from torchvision.datasets import CIFAR10
from torchvision.transforms.functional import pil_to_tensor

from datamodules.common import ImageDataModule, crop_and_flip, seeded_split, to_images
from shared.downloads import fetch_or_explain
from shared.errors import UserError, require


class _ToImage:
    """A PIL image from ``CIFAR10`` -> a float ``(3, H, W)`` tensor, resized and scaled like the other data.

    A class rather than a lambda so that DataLoader workers can pickle it.
    """

    def __init__(self, image_size: int | None, value_range: tuple[float, float]) -> None:
        self.image_size = image_size
        self.value_range = value_range

    def __call__(self, image: Any) -> torch.Tensor:  # a PIL image
        pixels = pil_to_tensor(image).unsqueeze(0).float() / 255.0
        return to_images(pixels, self.image_size, self.value_range)[0]


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 (32x32 colour images, 10 classes), downloaded into ``data_dir`` when online.

    The images stay in torchvision's ``CIFAR10`` (uint8 in memory) and are converted one by one as they are
    loaded, so that resizing to e.g. 224 px for ImageNet weights costs no 30 GB tensor.

    Args:
        data_dir: folder holding ``cifar-10-batches-py/`` (the python version of the data set).
        download: download and unpack the archive in ``prepare_data`` when the files are missing.
        download_timeout: seconds a connection may stall before the download is given up.
        batch_size: images per batch.
        image_size: side length to resize to (e.g. 64, or 224 for ImageNet weights), or null to keep 32.
        value_range: the pixel range the images come in: [0, 1] for classifiers, [-1, 1] for a GAN.
        val_size: images of the 50,000 training images (of the kept classes) held out for validation.
        classes: keep only these classes, relabelled 0..k-1 in the given order (e.g. [0, 1, 8, 9]: vehicles).
        shuffle: shuffle the training set each epoch (seeded by ``seed`` and the epoch).
        num_workers: DataLoader worker processes (each image is decoded and resized on the fly).
        seed: seed of the train/val split and of the shuffle.
        augment: crop each training image at random from it padded by an eighth, and mirror it half the time
            (``crop_and_flip``), anew each epoch.
    """

    # per-channel mean and std of the 50,000 training images in [0, 1]
    pixel_mean = (0.4914, 0.4822, 0.4465)
    pixel_std = (0.2470, 0.2435, 0.2616)
    # what torchvision's CIFAR10 reads: five training batches, one test batch, the label names
    files = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        download_timeout: float = 20.0,
        batch_size: int = 128,
        image_size: int | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
        val_size: int = 5000,
        classes: list[int] | None = None,
        shuffle: bool = True,
        num_workers: int = 0,
        seed: int = 42,
        augment: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, shuffle, seed, image_size, value_range)
        require(
            classes is None or (len(set(classes)) == len(classes) and set(classes) <= set(range(10))),
            f"data.classes must be distinct class indices 0-9, got {classes}.",
        )
        require(val_size >= 0, f"data.val_size must be 0 or more, got {val_size}.")
        self.data_dir = data_dir
        self.download = download
        self.download_timeout = download_timeout
        self.val_size = val_size
        self.classes = list(classes) if classes is not None else list(range(10))
        self.num_classes = len(self.classes)
        self.class_names = [self.names[i] for i in self.classes]
        side = image_size or 32
        self.dims = (3, side, side)
        self.augmentation = crop_and_flip(side, self.value_range) if augment else None

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / CIFAR10.base_folder

    def _files_present(self) -> bool:
        return all((self.folder / name).is_file() for name in self.files)

    def _missing_error(self, reason: str) -> UserError:
        return UserError(
            f"CIFAR-10 is not in {self.folder} and {reason}. Unpack {CIFAR10.filename} (the python version, "
            f"{CIFAR10.url}) into {self.data_dir}, or train offline on the bundled digits with "
            "--data=datamodules.DigitsDataModule."
        )

    def prepare_data(self) -> None:
        """Download once per node; offline, fail with one sentence instead of a stack of retries."""
        if not self._files_present():
            fetch_or_explain(
                lambda: CIFAR10(self.data_dir, train=True, download=True),
                self._missing_error,
                self.folder,
                self.download_timeout,
                self.download,
            )

    def _split(self, train: bool) -> Dataset:
        """One split through torchvision's class, which checks every file's md5 before reading it."""
        relabel = dict(zip(self.classes, range(len(self.classes)), strict=True))
        try:
            dataset = CIFAR10(
                self.data_dir,
                train=train,
                transform=_ToImage(self.image_size, self.value_range),
                target_transform=relabel.__getitem__,
            )
        except RuntimeError:
            raise UserError(
                f"The CIFAR-10 files in {self.folder} fail torchvision's md5 check: they are partial or not "
                "the python version. Delete the folder and let prepare_data download it again."
            ) from None
        if len(self.classes) == 10:
            return dataset
        keep = torch.isin(torch.tensor(dataset.targets), torch.tensor(self.classes))
        return Subset(dataset, keep.nonzero().flatten().tolist())

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if not self._files_present():
            raise self._missing_error("prepare_data has not downloaded it")
        full_train = self._split(train=True)
        require(
            self.val_size < len(full_train),
            f"data.val_size={self.val_size} leaves none of the {len(full_train)} training images to train on: "
            f"set data.val_size below {len(full_train)}.",
        )
        self.train_set, self.val_set = seeded_split(
            full_train, [len(full_train) - self.val_size, self.val_size], self.seed
        )
        self.test_set = self._split(train=False)
