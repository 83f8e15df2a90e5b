"""The classifier as people run it: the real command line, a copied folder, DDP, kills, tuning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from systems.classifier.train import main
from systems.classifier.tune import main as tune
from tests.helpers import QUIET, ROOT, assert_same_weights, refused, run_module

TRAIN = "systems.classifier.train"


@pytest.mark.slow
def test_fast_dev_run_through_the_real_command_line(tmp_path: Path) -> None:
    result = run_module(TRAIN, "fit", "--trainer.fast_dev_run=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc" in result.stdout  # fit, then the closing test
    assert "Tip" not in result.stdout + result.stderr  # Lightning's advertisements for its cloud are off
    assert not list(tmp_path.glob("lightning_logs/**/*.ckpt"))  # fast_dev_run writes no checkpoints


def test_tune_writes_a_config_that_fit_reads() -> None:
    found = tune([*QUIET, "--batch_size_trials=2", "--lr_find_steps=30", "--trainer.max_epochs=3"])
    tuned = Path("lightning_logs/classifier/tuned.yaml")
    written = yaml.safe_load(tuned.read_text())
    assert written["model"]["lr"] == pytest.approx(found["lr"])
    # two trials from the default 64, each doubling, all fit (a CPU never runs out of memory here); Lightning
    # before 2.5.5 counts the first doubling as no trial
    assert written["data"]["init_args"]["batch_size"] == found["batch_size"] in (128, 256)
    assert list(Path("lightning_logs/classifier").glob("version_*/lr_find.png"))
    cli = main(["fit", *QUIET, "--config", str(tuned), "--trainer.fast_dev_run=true"])
    assert cli.model.hparams.lr == pytest.approx(found["lr"])
    assert cli.datamodule.batch_size == found["batch_size"]
    assert cli.model.hparams.width == 32  # the rest still comes from config.yaml
    # the datamodule's own module, importable whether or not its package re-exports the class
    assert written["data"]["class_path"] == "datamodules.digits.DigitsDataModule"


def test_tune_refuses_to_overwrite_an_earlier_result(capsys: pytest.CaptureFixture[str]) -> None:
    tuned = Path("lightning_logs/classifier/tuned.yaml")
    tuned.parent.mkdir(parents=True)
    tuned.write_text("model: {lr: 0.1}\n")
    err = refused(capsys, tune, [*QUIET, "--lr_find_steps=5"])
    assert (
        "tuned.yaml exists (an earlier tuning): pass --output with another file, or --overwrite=true" in err
    )
    assert tuned.read_text() == "model: {lr: 0.1}\n"
    assert not list(tuned.parent.glob("version_*"))


@pytest.mark.slow
def test_an_int_limit_on_the_real_command_line_counts_batches(tmp_path: Path) -> None:
    """``=1`` is one batch, as ``Trainer(limit_train_batches=1)`` in Python; ``1.0`` would be all of them."""
    flags = ["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.max_epochs=2"]
    result = run_module(TRAIN, "fit", *QUIET, *flags, "--test_after_fit=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "lightning_logs/classifier/version_0"
    assert torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 2
    recorded = yaml.safe_load((folder / "config.yaml").read_text())["trainer"]
    assert recorded["limit_train_batches"] == 1 and isinstance(recorded["limit_train_batches"], int)
    assert recorded["limit_val_batches"] == 1 and isinstance(recorded["limit_val_batches"], int)


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


LONG_RUN = [
    "fit",
    *QUIET,
    "--trainer.max_epochs=12",
    "--trainer.limit_val_batches=1",
    "--trainer.deterministic=true",
    "--test_after_fit=false",
    # a slow learner, so early stopping does not end the run while the test waits for it
    "--model.lr=1e-4",
]


def start(tmp_path: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", TRAIN, *LONG_RUN, *flags]
    return subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_last_ckpt_as_if_never_stopped(tmp_path: Path) -> None:
    process = start(tmp_path, "--trainer.log_every_n_steps=1")
    last = tmp_path / "lightning_logs/classifier/version_0/checkpoints/last.ckpt"
    wait_for(last, process)
    time.sleep(0.3)  # into the next epoch, some of whose rows CSVLogger may have flushed
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    # resumed with max_epochs, not max_steps: max_steps on a resume from an end-of-epoch checkpoint re-runs
    # on_train_epoch_end without validation metrics (Lightning issue #19617) and EarlyStopping raises
    resumed = main([*LONG_RUN, "--trainer.log_every_n_steps=1", f"--ckpt_path={last}"])
    straight = main([*LONG_RUN, "--trainer.log_every_n_steps=1"])
    assert resumed.trainer.global_step == straight.trainer.global_step
    assert_same_weights(resumed.model, straight.model)
    # the resume went on in version_0: its metrics.csv is the uninterrupted run's, row for row, each once
    folders = [Path(cli.trainer.log_dir) for cli in (resumed, straight)]
    assert [f.name for f in folders] == ["version_0", "version_1"]
    rows = [(f / "metrics.csv").read_text().splitlines() for f in folders]
    assert rows[0] == rows[1] and len(rows[0]) > 100


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_that_resumes_bit_identically_and_exits_143(tmp_path: Path) -> None:
    process = start(tmp_path)
    folder = tmp_path / "lightning_logs/classifier/version_0/checkpoints"
    wait_for(folder / "last.ckpt", process)
    time.sleep(0.2)  # into the next epoch
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert "Stopped by SIGTERM: the state is saved in" in err
    resumed = main([*LONG_RUN, f"--ckpt_path={folder / 'interrupted.ckpt'}"])
    straight = main(LONG_RUN)
    assert resumed.trainer.global_step == straight.trainer.global_step
    assert_same_weights(resumed.model, straight.model)


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path: Path) -> None:
    result = run_module(
        TRAIN,
        "fit",
        *QUIET,
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=6",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    version = tmp_path / "lightning_logs/classifier/version_0"
    assert sorted(p.name for p in version.parent.iterdir()) == ["version_0"]  # rank 1 wrote no folder
    saved = torch.load(version / "checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == 12  # 6 batches of each process's half per epoch
    # the confusion matrix gathers both processes' halves of the 180 validation images
    counts = np.loadtxt(version / "val_confusion_matrix/epoch=001.csv", delimiter=",")
    assert counts.shape == (10, 10) and counts.sum() == 180
    assert "test/acc" in result.stdout
    # the metrics table is printed with self.print: once per epoch, not once per process
    assert result.stdout.count("epoch │ step") == 2
