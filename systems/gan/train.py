"""``python -m systems.gan.train``: fit with config.yaml; or ``fit|validate|test|predict`` and flags."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.cli import ArgsType

from shared.cli import SystemCLI
from systems.gan.module import GAN

CONFIG = Path(__file__).with_name("config.yaml")
# datamodule fact -> GAN argument
LINKS = {"dims": "image_shape"}


def main(args: ArgsType = None, run: bool = True) -> SystemCLI:
    return SystemCLI(GAN, name="gan", config_file=CONFIG, links=LINKS, args=args, run=run)


if __name__ == "__main__":
    main()
