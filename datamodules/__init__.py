"""LightningDataModules shared by the systems; each exposes the facts a model needs as attributes."""

from datamodules.cifar import CIFAR10DataModule
from datamodules.common import EpochSeededRandomSampler, ImageDataModule
from datamodules.digits import DigitsDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.sequences import SequenceDataModule

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "EpochSeededRandomSampler",
    "ImageDataModule",
    "MNISTDataModule",
    "SequenceDataModule",
]
