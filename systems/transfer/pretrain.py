"""``python -m systems.transfer.pretrain``: the source model, made offline (pretrain_config.yaml: a ResNet-18 from
random weights on all ten digits of the first half of the images), whose backbone ``export`` writes to the file
that ``train`` reads. Logs go to ``lightning_logs/transfer/pretrain/version_N``."""

from pytorch_lightning.cli import LightningArgumentParser

from shared.cli import SystemCLI
from systems.transfer.callbacks import ExportBackbone
from systems.transfer.module import TransferLearner
from systems.transfer.train import LINKS


class PretrainCLI(SystemCLI):
    """The CLI with an ``export`` section: what pretraining is for, not a callback a flag could replace."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(ExportBackbone, "export")


def main(args: list[str] | None = None, run: bool = True) -> SystemCLI:
    return PretrainCLI(TransferLearner, "transfer/pretrain", LINKS, args, run, config="pretrain_config.yaml")


if __name__ == "__main__":
    main()
