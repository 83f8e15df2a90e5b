"""``python -m systems.transfer.pretrain``: make the source model offline, then export its backbone.

It trains the same ResNet from random weights on the source task (all ten digits on the first half of the
images by default, see pretrain_config.yaml) and writes the backbone to ``export.path``, the file
``train``'s config.yaml reads.
Logs go to ``lightning_logs/transfer/pretrain/version_N``.
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.cli import ArgsType, LightningArgumentParser

from shared.cli import SystemCLI
from systems.transfer.callbacks import ExportBackbone
from systems.transfer.module import TransferLearner
from systems.transfer.train import LINKS

CONFIG = Path(__file__).with_name("pretrain_config.yaml")


class PretrainCLI(SystemCLI):
    """The shared CLI plus an ``export`` section: the export is what pretraining is for, so it is not a
    callback in a list that a ``--trainer.callbacks`` flag could replace."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(ExportBackbone, "export")


def main(args: ArgsType = None, run: bool = True) -> SystemCLI:
    return PretrainCLI(
        TransferLearner, name="transfer/pretrain", config_file=CONFIG, links=LINKS, args=args, run=run
    )


if __name__ == "__main__":
    main()
