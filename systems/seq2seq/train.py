"""``python -m systems.seq2seq.train``: fit with config.yaml; or ``fit|validate|test|predict`` and flags."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.cli import ArgsType

from shared.cli import SystemCLI
from systems.seq2seq.module import Seq2Seq

CONFIG = Path(__file__).with_name("config.yaml")
# datamodule fact -> Seq2Seq argument
LINKS = {"vocab_size": "vocab_size"}


def main(args: ArgsType = None, run: bool = True) -> SystemCLI:
    return SystemCLI(Seq2Seq, name="seq2seq", config_file=CONFIG, links=LINKS, args=args, run=run)


if __name__ == "__main__":
    main()
