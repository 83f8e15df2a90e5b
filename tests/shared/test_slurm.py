"""Pre-emption on a SLURM cluster: a simulated SLURM environment and a fake ``scontrol`` that records its arguments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from systems.classifier.train import main
from tests.helpers import ROOT, assert_same_weights, refused, send_signal
from tests.shared.test_interruptions import FOLDER, RUN

SLURM = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
SLURM |= {"SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SLURM job 123 (``SLURM_RESTART_COUNT`` unset: its first start), with ``scontrol`` on the PATH writing what it
    is asked into the returned file."""
    calls, bin_folder = tmp_path / "scontrol-calls.txt", tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_folder / "scontrol").chmod(0o755)
    for name, value in {**SLURM, "SLURM_JOB_ID": "123", "PATH": f"{bin_folder}:{os.environ['PATH']}"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    return calls


def test_sigusr1_saves_in_the_run_folder_requeues_and_the_requeued_job_resumes_by_itself(
    cluster: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SLURM's warning before the time limit (``--signal=SIGUSR1@90``): the batch finishes, the state goes to the
    run folder (not Lightning's hpc_ckpt_N.ckpt in the working folder), scontrol requeues the job, status 138. The
    same command started again by SLURM (same job id, a restart count) resumes from it, exactly, in that folder."""
    straight = main(RUN)
    with pytest.raises(SystemExit) as stop:
        main([*RUN, send_signal("after_backward", 1, 2, signal.SIGUSR1)])
    assert stop.value.code == 128 + signal.SIGUSR1
    saved = FOLDER / "version_1/checkpoints/interrupted.ckpt"
    assert (
        f"Stopped by SIGUSR1: the state is saved in {saved}; SLURM job 123 is requeued"
        in capsys.readouterr().err
    )
    assert cluster.read_text() == "requeue 123\n" and not list(Path().glob("hpc_ckpt_*"))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    resumed = main(RUN)  # no --ckpt_path: the job's own checkpoint
    assert resumed.trainer.ckpt_path == str(saved) and Path(resumed.trainer.log_dir) == FOLDER / "version_1"
    assert_same_weights(resumed.model, straight.model)


def test_a_requeued_job_resumes_no_other_jobs_run(cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        main([*RUN, send_signal("after_backward", 1, 2, signal.SIGTERM)])  # job 123, pre-empted
    monkeypatch.setenv("SLURM_JOB_ID", "456")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    other = main(RUN)
    assert other.trainer.ckpt_path is None and Path(other.trainer.log_dir) == FOLDER / "version_1"


def test_a_stale_hpc_checkpoint_is_never_resumed_by_itself(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lightning's SLURM plug-in loads any hpc_ckpt_N.ckpt of the working folder without being asked: refused."""
    Path("hpc_ckpt_1.ckpt").write_bytes(b"a file of an earlier job")
    err = refused(capsys, main, RUN)
    assert (
        "Lightning's SLURM plug-in would resume hpc_ckpt_1.ckpt by itself, a file this run did not write"
        in err
    )
    assert not Path("lightning_logs").exists()


def test_without_scontrol_the_stop_says_how_to_resume(
    cluster: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a login node's PATH, say: no SLURM commands
    with pytest.raises(SystemExit) as stop:
        main([*RUN, send_signal("after_backward", 1, 2, signal.SIGUSR1)])
    assert stop.value.code == 138
    saved = FOLDER / "version_0/checkpoints/interrupted.ckpt"
    assert "SLURM job 123 could not be requeued (" in (err := capsys.readouterr().err)
    assert f"resume with `fit --ckpt_path={saved}`" in err


@pytest.mark.slow
def test_sigusr1_through_the_real_command_line(cluster: Path, tmp_path: Path) -> None:
    """A real SIGUSR1 to a real run: status 138, one sentence, the requeue asked for, no traceback."""
    command = [
        sys.executable,
        "-m",
        "systems.classifier.train",
        *RUN,
        send_signal("after_backward", 1, 2, 10),
    ]
    run = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 138, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("Stopped by SIGUSR1: the state is saved in")
    assert cluster.read_text() == "requeue 123\n"
    saved = tmp_path / "lightning_logs/classifier/version_0/checkpoints/interrupted.ckpt"
    assert torch.load(saved, weights_only=True)["global_step"] == 8
