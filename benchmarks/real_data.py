"""``python -m benchmarks.real_data --out DIR``: the runs of the top README's "Real data, offline", timed.

Each run is the command its system's README measured on the 2-core build machine (the same config files and
flags), here on whatever device there is, so that the same runs can be timed on a GPU: wall time of ``fit``
and its closing test, and the figure the README reports. The files come from the installed packages, or from
``data/`` on a machine without them (``bash benchmarks/gpu_run.sh prepare`` puts them there, to carry). Writes ``DIR/real_data.{json,md}`` after every run.
``--quick --accelerator cpu`` runs each for a few batches (the test does).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import environment_line, markdown_table
from benchmarks.runner import environment, pick_device

ROOT = Path(__file__).resolve().parents[1]
QUICK = [f"--trainer.{limit}_batches=2" for limit in ("limit_train", "limit_val", "limit_test")]


def runs(data: Path) -> dict[str, tuple[str, list[str], str]]:
    """name: (system, flags on top of its config.yaml, the figure its README reports); ``data`` holds what the
    packages are not there to give (the Debian package's Fashion-MNIST files win where it is installed)."""
    fashion = f"--data.init_args.data_dir={data}"
    book = ["--model.truncated_bptt_steps=16", f"--data.init_args.path={data / 'kjv.txt'}"]
    return {
        "classifier, Fashion-MNIST": (
            "classifier",
            [f"--config={ROOT}/systems/classifier/config_fashion.yaml", fashion],
            "test/acc",
        ),
        "GAN, Fashion-MNIST": (
            "gan",
            [f"--config={ROOT}/systems/gan/config_fashion.yaml", fashion],
            "val/fd",
        ),
        "transfer, Fashion-MNIST, 10% of the labels, frozen EfficientNet-lite0": (
            "transfer",
            [
                *(
                    "--data=datamodules.MNISTDataModule",
                    "--data.dataset=fashion_mnist",
                    fashion,
                    "--data.image_size=32",
                ),
                *(
                    "--data.val_size=1000",
                    "--data.batch_size=64",
                    "--data.train_fraction=0.1",
                    "--trainer.max_epochs=10",
                ),
                *("--model.arch=efficientnet_lite0", "--model.weights=IMAGENET1K"),
            ],
            "test/acc",
        ),
        "seq2seq, King James Bible, chunks of 16": (
            "seq2seq",
            [f"--config={ROOT}/systems/seq2seq/config_book.yaml", *book],
            "test/bpc",
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real-data"))
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--data", type=Path, default=ROOT / "data", help="where `gpu_run.sh prepare` put the files"
    )
    parser.add_argument("--quick", action="store_true", help="two batches of each split, one epoch")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.accelerator)
    done: list[dict[str, Any]] = []
    payload = {"benchmark": "real_data", "environment": environment(device), "runs": done}
    flags = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    flags += [f"--trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}", "--trainer.devices=1"]
    flags += [*QUICK, "--trainer.max_epochs=1"] if args.quick else []
    for name, (system, extra, figure) in runs(args.data.resolve()).items():
        train = importlib.import_module(f"systems.{system}.train")
        with (
            tempfile.TemporaryDirectory() as folder,
            contextlib.chdir(folder),
        ):  # its lightning_logs/ go with it
            start = time.perf_counter()
            cli = train.main(["fit", *extra, *flags])
            seconds = time.perf_counter() - start
        value = cli.trainer.callback_metrics.get(figure)  # None where it was not logged
        done.append(
            {"run": name, "seconds": round(seconds, 1), figure: None if value is None else float(value)}
        )
        (args.out / "real_data.json").write_text(json.dumps(payload, indent=2) + "\n")
        rows = [
            [r["run"], f"{r['seconds']:.0f} s", f"{k} {v:.4g}" if v is not None else f"no {k}"]
            for r in done
            for k, v in list(r.items())[2:]
        ]
        table = markdown_table(["run", "wall time, fit and test", "figure"], rows)
        text = f"# Real-data runs\n\n{environment_line(payload['environment'])}\n\n"
        (args.out / "real_data.md").write_text(text + table)
    return payload


if __name__ == "__main__":
    main()
