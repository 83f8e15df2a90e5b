"""What tests share beyond fixtures: quiet Trainer flags and running a real command line."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]

# Trainer flags that keep an in-process CLI run quiet and short; tests add the sizes they need.
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0",
]


def real_data(path: str | Path, installs: str) -> Path:
    """``path``, a file or folder that a Debian package or an extra installs (``installs`` says how); without it the
    test skips, except in CI, which installs them all and sets ``SYSTEMS_REAL_DATA=required``: there it fails."""
    if Path(path).exists():
        return Path(path)
    reason = f"{path} is absent: {installs}"
    if os.environ.get("SYSTEMS_REAL_DATA") == "required":
        pytest.fail(reason)
    pytest.skip(reason)


def extra(packages: tuple[str, ...], installs: str) -> None:
    """Skip a test of an optional extra whose packages are not installed (``installs`` says how), except in CI, which
    installs every extra and sets ``SYSTEMS_EXTRAS=required``: there it fails."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed: {installs}"
    if os.environ.get("SYSTEMS_EXTRAS") == "required":
        pytest.fail(reason)
    pytest.skip(reason)


def run_module(
    module: str, *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` in ``cwd`` with this checkout first on the path; text output."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ctrl_c_after_first_epoch(module: str, *args: str, cwd: Path) -> tuple[int, str]:
    """Run ``python -m module args`` in ``cwd``, send it Ctrl-C once the classifier's first ``last.ckpt`` is written
    (its first epoch has ended), and return its exit status and standard error."""
    command = [sys.executable, "-m", module, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # all of it: a GPU machine's CUDA needs its variables
    process = subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    last = cwd / "lightning_logs/classifier/version_0/checkpoints/last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no last.ckpt; the run's stderr ends: {process.communicate()[1][-2000:]}")
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


class SendSignal(pl.Callback):
    """Send ``signum`` to this very process ``times`` times at one moment of a run: ``hook`` in epoch
    ``epoch`` at batch ``batch`` (``after_backward``: in the middle of a training step, between its backward
    and its optimizer step; ``val_batch_start``: during validation; ``train_batch_end``: after the batch)."""

    def __init__(
        self, hook: str, epoch: int, batch: int, signum: int = signal.SIGINT, times: int = 1
    ) -> None:
        self.hook, self.epoch, self.batch, self.signum, self.times = hook, epoch, batch, signum, times
        self.sent, self.batch_idx = False, 0

    def _maybe_send(self, trainer: pl.Trainer, hook: str, batch: int) -> None:
        if hook == self.hook and not self.sent and (trainer.current_epoch, batch) == (self.epoch, self.batch):
            self.sent = True
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.batch_idx = args[-1]

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_send(trainer, "after_backward", self.batch_idx)

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            self._maybe_send(trainer, "val_batch_start", args[2])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._maybe_send(trainer, "train_batch_end", args[2])


def send_signal(hook: str, epoch: int, batch: int, signum: int = signal.SIGINT, times: int = 1) -> str:
    """The flag that adds ``SendSignal`` to a run's callbacks."""
    init = {"hook": hook, "epoch": epoch, "batch": batch, "signum": int(signum), "times": times}
    return "--trainer.callbacks+=" + json.dumps({"class_path": "tests.helpers.SendSignal", "init_args": init})


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


def logged_steps(folder: str | Path) -> list[tuple[str, str]]:
    """(epoch, step) of every row of a run's metrics.csv that holds a validation metric."""
    with open(Path(folder) / "metrics.csv", newline="") as file:
        return [
            (r["epoch"], r["step"])
            for r in csv.DictReader(file)
            if any(k.startswith("val/") and v for k, v in r.items())
        ]


def refused(capsys: Any, run: Any, args: list[str]) -> str:
    """Run ``run(args)``, which must stop with exit status 2 and one message without a traceback; the message."""
    capsys.readouterr()
    try:
        run(args)
    except SystemExit as stop:
        assert stop.code == 2, stop.code
    else:
        raise AssertionError(f"{args} was not refused")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err
