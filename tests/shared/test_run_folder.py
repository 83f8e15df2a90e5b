"""The run's folder: claimed by one run only, and never left with a half-written checkpoint."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning_fabric.plugins.io import torch_io

from shared import cli as shared_cli
from systems.classifier.train import main
from tests.helpers import QUIET, ROOT

SHORT = [
    *QUIET,
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--test_after_fit=false",
]


def test_a_version_taken_after_the_folder_was_listed_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs list the folder at the same moment and both see version_0 free: mkdir, which either makes
    the folder or fails, gives it to one of them, and the other takes the next."""
    folder = Path("lightning_logs/classifier")
    (folder / "version_0").mkdir(parents=True)
    (folder / "version_1").mkdir()
    monkeypatch.setattr(shared_cli, "_listing", lambda _: [])  # a listing taken before both were made
    cli = main(["fit", *SHORT, "--trainer.max_epochs=1"])
    assert Path(cli.trainer.log_dir) == folder / "version_2"
    assert (folder / "version_2/config.yaml").is_file() and not any((folder / "version_0").iterdir())


@pytest.mark.slow
def test_runs_started_together_in_one_folder_each_get_their_own(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "systems.classifier.train", "fit", *SHORT, "--trainer.max_epochs=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
    folders = sorted((tmp_path / "lightning_logs/classifier").iterdir())
    assert [p.name for p in folders] == ["version_0", "version_1", "version_2"]
    for folder in folders:
        assert (folder / "config.yaml").is_file()
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_a_failed_write_is_reported_once_and_leaves_no_truncated_checkpoint(tmp_path: Path) -> None:
    """A file-size limit makes every checkpoint write fail, as a full disk does, in a real run."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # a checkpoint is ~800 KB

    result = subprocess.run(
        [sys.executable, "-m", "systems.classifier.train", "fit", *SHORT],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(
        "error: File too large (lightning_logs/classifier/version_0/checkpoints/epoch=00"
    )
    checkpoints = tmp_path / "lightning_logs/classifier/version_0/checkpoints"
    assert list(checkpoints.iterdir()) == []  # no truncated file, no partial one


def test_last_ckpt_stays_the_last_good_state_when_a_later_write_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = torch_io._atomic_save
    writes = []

    def disk_full_from_the_third_write(checkpoint: dict, path: object) -> None:
        writes.append(path)
        if len(writes) <= 2:  # epoch 0: the best checkpoint and last.ckpt
            return original(checkpoint, path)
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch_io, "_atomic_save", disk_full_from_the_third_write)
    with pytest.raises(SystemExit) as stop:
        main(["fit", *SHORT])
    assert stop.value.code == 1
    assert "error: No space left on device (lightning_logs/classifier/version_0/checkpoints/" in (
        capsys.readouterr().err
    )
    checkpoints = Path("lightning_logs/classifier/version_0/checkpoints")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch=00-val_acc=0.1100.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0
