"""``python -m systems.classifier.train``: fit with config.yaml, or any LightningCLI subcommand and flags."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.cli import ArgsType

from shared.cli import SystemCLI
from systems.classifier.module import Classifier

CONFIG = Path(__file__).with_name("config.yaml")
# datamodule fact -> Classifier argument
LINKS = {"num_classes": "num_classes", "dims": "image_shape", "mean": "mean", "std": "std"}


def main(args: ArgsType = None, run: bool = True) -> SystemCLI:
    return SystemCLI(Classifier, name="classifier", config_file=CONFIG, links=LINKS, args=args, run=run)


if __name__ == "__main__":
    main()
