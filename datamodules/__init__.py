"""LightningDataModules shared by the systems; each exposes the facts a model needs as attributes.

``datamodules.DigitsDataModule`` imports ``digits.py`` alone, when first named: a copied system takes only the
datamodules it uses."""

from importlib import import_module
from typing import Any

_FILES = {"DigitsDataModule": "digits", "MNISTDataModule": "mnist", "CIFAR10DataModule": "cifar"}
_FILES |= {"SequenceDataModule": "sequences", "TextDataModule": "text"}
_FILES |= dict.fromkeys(("ImageFolderDataModule", "LinesDataModule", "SamplesDataModule"), "own")
__all__ = sorted(_FILES)


def __getattr__(name: str) -> Any:
    if name not in _FILES:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    return getattr(import_module(f"datamodules.{_FILES[name]}"), name)
