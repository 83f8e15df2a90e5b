"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images that need no download."""

from __future__ import annotations

from typing import Literal

import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from datamodules.common import ImageDataModule, seeded_split, small_affine, to_images
from shared.errors import require


class DigitsDataModule(ImageDataModule):
    """The offline default of every image system.

    Args:
        batch_size: images per batch.
        image_size: side length to resize the 8x8 images to (e.g. 28 or 32), or null to keep 8.
        value_range: the pixel range the images come in: [0, 1] for classifiers, [-1, 1] for a GAN.
        val_fraction: share of the images held out for validation.
        test_fraction: share of the images held out for testing.
        classes: keep only these digits, relabelled 0..k-1 in the given order (e.g. [5, 6, 7, 8, 9]).
        shuffle: shuffle the training set each epoch (seeded by ``seed`` and the epoch).
        num_workers: DataLoader worker processes (the data is a tensor in memory: 0 is fastest).
        seed: seed of the train/val/test split and of the shuffle.
        half: only the ``first`` or ``second`` half of the images (as scikit-learn orders them), so that two runs,
            e.g. a pretraining and a transfer, never share an image; null: all of them.
        augment: turn, shift and scale each training image a little (``small_affine``), anew each epoch.
    """

    pixel_mean, pixel_std = (0.3053,), (0.3760,)

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        classes: list[int] | None = None,
        shuffle: bool = True,
        num_workers: int = 0,
        seed: int = 42,
        half: Literal["first", "second"] | None = None,
        augment: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, shuffle, seed, image_size, value_range)
        self.augmentation = small_affine(self.value_range) if augment else None
        require(
            0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1,
            f"data.val_fraction ({val_fraction}) and data.test_fraction ({test_fraction}) must be in [0, 1) and sum "
            "to less than 1: leave some images for training.",
        )
        require(
            len(set(classes or [])) == len(classes or []) and set(classes or []) <= set(range(10)),
            f"data.classes must be distinct digits 0-9, got {classes}.",
        )
        self.fractions = [1.0 - val_fraction - test_fraction, val_fraction, test_fraction]
        self.classes, self.half = list(range(10)) if classes is None else list(classes), half
        self.num_classes, self.dims = len(self.classes), (1, image_size or 8, image_size or 8)
        self.class_names = [str(digit) for digit in self.classes]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        digits = load_digits()
        pixels, labels = torch.from_numpy(digits.images).unsqueeze(1) / 16.0, torch.from_numpy(digits.target)
        if self.half is not None:
            part = slice(0, len(labels) // 2) if self.half == "first" else slice(len(labels) // 2, None)
            pixels, labels = pixels[part], labels[part]
        keep = torch.isin(labels, torch.tensor(self.classes))
        relabel = torch.full((10,), -1, dtype=torch.long)
        relabel[self.classes] = torch.arange(len(self.classes))
        images = to_images(pixels[keep], self.image_size, self.value_range)
        self.train_set, self.val_set, self.test_set = seeded_split(
            TensorDataset(images, relabel[labels[keep]]), self.fractions, self.seed
        )
