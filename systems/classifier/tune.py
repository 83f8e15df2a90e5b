"""``python -m systems.classifier.tune``: the 1.x ``auto_scale_batch_size`` and ``auto_lr_find`` in 2.x.

It builds model, data and Trainer from the same ``config.yaml`` and flags as ``train``, runs
``Tuner.scale_batch_size`` and then ``Tuner.lr_find`` (the learning rate depends on the batch size),
saves the learning-rate curve as a PNG, and writes the two values to a config file that ``fit`` reads:
``python -m systems.classifier.train fit --config lightning_logs/classifier/tuned.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pytorch_lightning.cli import ArgsType, LightningArgumentParser
from pytorch_lightning.tuner import Tuner

from shared.cli import SystemCLI
from shared.errors import reported, require
from systems.classifier.module import Classifier
from systems.classifier.train import LINKS


class TuneCLI(SystemCLI):
    """``SystemCLI`` without subcommands, plus where to write the results and how hard to search."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--output", default="lightning_logs/classifier/tuned.yaml", help="config file to write"
        )
        parser.add_argument(
            "--overwrite", type=bool, default=False, help="replace --output if it exists (else refused)"
        )
        parser.add_argument(
            "--batch_size_trials",
            type=int,
            default=4,
            help="doublings of the batch size to try (on a GPU the search stops at an out-of-memory too)",
        )
        parser.add_argument("--lr_find_steps", type=int, default=100, help="steps of the learning-rate sweep")


def main(args: ArgsType = None) -> dict[str, float | int]:
    cli = TuneCLI(Classifier, "classifier", LINKS, args, run=False)
    with reported(cli.remove_what_was_written):
        return tune(cli)


def tune(cli: TuneCLI) -> dict[str, float | int]:
    output = Path(cli.config.output)
    require(
        cli.config.overwrite or not output.exists(),
        f"{output} exists (an earlier tuning): pass --output with another file, or --overwrite=true.",
    )
    tuner = Tuner(cli.trainer)
    batch_size = tuner.scale_batch_size(
        cli.model,
        datamodule=cli.datamodule,
        mode="power",
        init_val=cli.datamodule.batch_size,
        max_trials=cli.config.batch_size_trials,
    )
    finder = tuner.lr_find(
        cli.model, datamodule=cli.datamodule, min_lr=1e-6, num_training=cli.config.lr_find_steps
    )
    lr = finder.suggestion() if finder is not None else None
    require(
        lr is not None,
        "lr_find found no clear descent in the loss curve: set model.lr, or raise --lr_find_steps.",
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    curve = Path(cli.trainer.log_dir) / "lr_find.png"  # this tuning run's folder, beside its config.yaml
    finder.plot(suggest=True).savefig(curve, dpi=100)
    # the class's own module: a datamodule need not be re-exported by its package for fit to import it
    data_class = f"{type(cli.datamodule).__module__}.{type(cli.datamodule).__name__}"
    tuned = {
        "model": {"lr": float(lr)},
        "data": {"class_path": data_class, "init_args": {"batch_size": batch_size}},
    }
    output.write_text(
        "# written by `python -m systems.classifier.tune`; use it with\n"
        f"# python -m systems.classifier.train fit --config {output}\n"
        + yaml.safe_dump(tuned, sort_keys=False)
    )
    print(f"batch_size={batch_size}, lr={lr:.3g} written to {output} (curve: {curve})")
    return {"lr": float(lr), "batch_size": batch_size}


if __name__ == "__main__":
    main()
