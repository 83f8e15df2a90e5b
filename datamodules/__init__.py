"""LightningDataModules shared by the systems; each exposes the facts a model needs as attributes."""

from datamodules.common import (
    EpochSeededRandomSampler,
    EpochSequentialSampler,
    ImageDataModule,
    ResumableDataLoader,
)
from datamodules.digits import DigitsDataModule
from datamodules.mnist import MNISTDataModule

__all__ = [
    "DigitsDataModule",
    "EpochSeededRandomSampler",
    "EpochSequentialSampler",
    "ImageDataModule",
    "MNISTDataModule",
    "ResumableDataLoader",
]
