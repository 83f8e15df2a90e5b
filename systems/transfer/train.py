"""``python -m systems.transfer.train``: fit with config.yaml; or ``fit|validate|test|predict`` and flags.

The default transfers the backbone that ``python -m systems.transfer.pretrain`` wrote (ten digits, first
half of the images) to digits 5-9 of the other half, frozen.
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.cli import ArgsType

from shared.cli import SystemCLI
from systems.transfer.module import TransferLearner

CONFIG = Path(__file__).with_name("config.yaml")
# datamodule fact -> TransferLearner argument
LINKS = {"num_classes": "num_classes", "dims": "image_shape", "mean": "mean", "std": "std"}


def main(args: ArgsType = None, run: bool = True) -> SystemCLI:
    return SystemCLI(TransferLearner, name="transfer", config_file=CONFIG, links=LINKS, args=args, run=run)


if __name__ == "__main__":
    main()
