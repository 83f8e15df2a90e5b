"""LightningDataModules shared by the systems; each exposes the facts a model needs as attributes."""

from datamodules.cifar import CIFAR10DataModule
from datamodules.common import (
    EpochSeededRandomSampler,
    EpochSequentialSampler,
    ImageDataModule,
    ResumableDataLoader,
)
from datamodules.digits import DigitsDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.sequences import SequenceDataModule

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "EpochSeededRandomSampler",
    "EpochSequentialSampler",
    "ImageDataModule",
    "MNISTDataModule",
    "ResumableDataLoader",
    "SequenceDataModule",
]
