"""``python -m systems.transfer.pretrain``: the source model, made offline (pretrain_config.yaml: a ResNet-18 from
random weights on all ten digits of the first half of the images), whose backbone ``export`` writes to the file
that ``train`` reads. Logs go to ``lightning_logs/transfer/pretrain/version_N``."""

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import LightningArgumentParser
from pytorch_lightning.utilities import rank_zero_info

from shared.cli import SystemCLI
from systems.transfer.module import TransferLearner
from systems.transfer.train import LINKS
from systems.transfer.weights import PRETRAINED_BACKBONE, read_backbone_state


class ExportBackbone(Callback):
    """When pretraining ends, the backbone's weights from the best monitored checkpoint (or as the model ended) go to
    ``path``, a plain torchvision ResNet ``state_dict`` without the classifier, by default the file ``train``
    reads. ``fast_dev_run`` writes nothing: a one-batch backbone must not replace a real one."""

    def __init__(self, path: str = PRETRAINED_BACKBONE) -> None:
        self.path = Path(path)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:
            rank_zero_info(f"fast_dev_run: the backbone is not exported to {self.path}")
        elif trainer.is_global_zero:
            best = next(
                (c.best_model_path for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), ""
            )
            weights = read_backbone_state(best) if best else pl_module.backbone.state_dict()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.detach().cpu() for k, v in weights.items()}, self.path)
            rank_zero_info(f"Backbone of {best or 'the last epoch'} exported to {self.path}")


class PretrainCLI(SystemCLI):
    """The CLI with an ``export`` section: what pretraining is for, not a callback a flag could replace."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(ExportBackbone, "export")


def main(args: list[str] | None = None, run: bool = True) -> SystemCLI:
    return PretrainCLI(TransferLearner, "transfer/pretrain", LINKS, args, run, config="pretrain_config.yaml")


if __name__ == "__main__":
    main()
