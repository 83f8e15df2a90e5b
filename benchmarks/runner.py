"""Running a workload in the Trainer or in its plain loop, and what both benchmark commands share."""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from benchmarks.timing import TrainerWindows, Windows, losses_as_floats
from benchmarks.workloads import PRECISIONS, WORKLOADS, Precision, Workload, loader, to_device

# the runs are deliberately bare: no workers, no validation, no logger; Lightning's advice about it is noise
warnings.filterwarnings("ignore", module="pytorch_lightning")
warnings.filterwarnings("ignore", module="lightning_fabric")


def pick_device(accelerator: str) -> torch.device:
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise SystemExit(
                "--accelerator=cuda asked for, but torch sees no CUDA device: use --accelerator=cpu."
            )
        return torch.device("cuda", 0)
    return torch.device("cpu")


@functools.cache
def bf16_lstm_runs_on_this_cpu() -> bool:
    """oneDNN runs a bf16 LSTM only on CPUs with AVX-512: an AVX2-only one refuses the primitive."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.LSTM(2, 2)(torch.randn(1, 1, 2))
    except RuntimeError:
        return False
    return True


def cannot_run(workload: str, precision: str, device: torch.device) -> str | None:
    """Why ``workload`` cannot run at ``precision`` on ``device`` (a row then says so), or None."""
    if precision.startswith("bf16") and workload == "seq2seq" and device.type == "cpu":
        return None if bf16_lstm_runs_on_this_cpu() else "this CPU has no bf16 LSTM (oneDNN needs AVX-512)"
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


def environment(device: torch.device) -> dict[str, str]:
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "cuda": torch.version.cuda or "none",
        "date": datetime.date.today().isoformat(),
    }


def results_folder(root: Path, device: torch.device) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return root / f"{slug}-{datetime.date.today().isoformat()}"


def make_loader(
    workload: Workload, sizes: dict[str, int], steps: int, device: torch.device, on_device: bool
) -> DataLoader:
    """Batches already on the device (as the reference H100 figures in benchmarks/README.md), or pinned
    on the host so every step pays the copy (the parity benchmark: the same loader for both loops)."""
    batches = workload.batches(sizes, torch.Generator().manual_seed(0))
    if on_device:
        batches = [to_device(b, device) for b in batches]
    elif device.type == "cuda":
        batches = [
            [t.pin_memory() for t in b] if isinstance(b, (list, tuple)) else b.pin_memory() for b in batches
        ]
    return loader(batches, steps)


class ChannelsLast(pl.Callback):
    """The module's weights in channels_last: convolutions then run in NHWC (inputs follow the weights)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)


def fresh_start(
    workload: Workload, sizes: dict[str, int], precision: Precision, device: torch.device, compile: bool
) -> pl.LightningModule:
    """The same initial weights and a clean memory count for every run, Trainer or plain; compiled, a clean
    Dynamo cache too (each new module would cost it a recompile, and past 8 Dynamo runs the code eagerly)."""
    precision.apply_tf32()
    if compile:
        torch.compiler.reset()
    torch.manual_seed(0)
    module = workload.build(sizes, compile)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return module


def finish(
    windows: Windows, device: torch.device, module: pl.LightningModule, losses: list
) -> dict[str, Any]:
    """Timing, peak memory, the losses the steps returned (if they return them) and the final weights."""
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    weights = {name: value.detach().float().cpu() for name, value in module.state_dict().items()}
    return {
        **windows.summary(),
        "peak_memory_mib": memory,
        "losses": losses_as_floats(losses),
        "weights": weights,
    }


def run_trainer(
    workload: Workload,
    sizes: dict[str, int],
    precision: Precision,
    device: torch.device,
    windows: Windows,
    data: DataLoader,
    compile: bool = False,
    profiler: pl.profilers.Profiler | None = None,
) -> dict[str, Any]:
    """Train the system's LightningModule for ``windows.total_steps`` batches; timing, memory, losses. Compiled,
    the warm-up steps take the compilation. ``profiler``: Lightning's, timing its hooks (``benchmarks.profile``)."""
    module = fresh_start(workload, sizes, precision, device, compile)
    timer = TrainerWindows(windows)
    # without a logger, Lightning's log folder is the root folder: what a module draws (the GAN's grid
    # after its last epoch) goes to a folder of its own, not into the working folder
    with tempfile.TemporaryDirectory() as scratch:
        trainer = pl.Trainer(
            default_root_dir=scratch,
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            precision=precision.lightning,
            max_epochs=1,
            limit_train_batches=windows.total_steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            profiler=profiler,
            callbacks=[timer, *([ChannelsLast()] if precision.channels_last else [])],
        )
        trainer.fit(module, train_dataloaders=data)
    return finish(windows, device, module, timer.losses)


def run_plain(
    workload: Workload,
    sizes: dict[str, int],
    precision: Precision,
    device: torch.device,
    windows: Windows,
    data: DataLoader,
    compile: bool = False,
) -> dict[str, Any]:
    """The same step in the workload's plain PyTorch loop, from the same initial weights (and networks compiled
    as the system compiles them)."""
    module = fresh_start(workload, sizes, precision, device, compile)
    losses = workload.plain_loop(module, data, device, precision, windows)
    return finish(windows, device, module, losses)


def common_arguments(parser: argparse.ArgumentParser, precisions: list[str], runs: int) -> None:
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--precisions", nargs="+", default=precisions, choices=list(PRECISIONS))
    parser.add_argument(
        "--preset", default=None, choices=["gpu", "cpu", "tiny"], help="default: gpu on CUDA, else cpu"
    )
    parser.add_argument(
        "--size",
        nargs="*",
        default=[],
        metavar="WORKLOAD.KEY=N",
        help="override a preset, e.g. transfer.batch=64",
    )
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "gpu"])
    parser.add_argument("--warmup", type=int, default=10, help="steps before timing starts")
    parser.add_argument("--window", type=int, default=10, help="steps per timed window")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed windows per run; a run reports their median"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=runs,
        help="runs of each setting, taking turns; the median run is reported",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="each setting also with the systems' compile=True (torch.compile, inductor): a '+compile' row",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results root folder")


def settings(args: argparse.Namespace) -> list[tuple[Precision, bool, str]]:
    """The precisions asked for, each eager and, with ``--compile``, compiled: (precision, compile, row label)."""
    modes = (False, True) if args.compile else (False,)
    return [(PRECISIONS[p], c, p + ("+compile" if c else "")) for p in args.precisions for c in modes]


def workload_sizes(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, int]]:
    preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    sizes = {name: dict(WORKLOADS[name].presets[preset]) for name in args.workloads}
    for item in args.size:
        match = re.fullmatch(r"(\w+)\.(\w+)=(\d+)", item)
        if not match or match[1] not in WORKLOADS or match[2] not in WORKLOADS[match[1]].presets[preset]:
            raise SystemExit(f"--size {item!r}: write WORKLOAD.KEY=N with a key of that workload's preset.")
        sizes.setdefault(match[1], dict(WORKLOADS[match[1]].presets[preset]))[match[2]] = int(match[3])
    return sizes
