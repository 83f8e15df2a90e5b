"""The one command for a GPU lease, run with tiny sizes on the CPU: every part finishes and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


def gpu_run(out: Path, *what: str) -> None:
    env = {
        **os.environ,
        "GPU_RUN_PRESET": "tiny",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # python3 is this interpreter
    }
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_run.sh"), str(out), *what],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_the_gpu_run_script_runs_end_to_end_with_tiny_sizes(tmp_path: Path) -> None:
    gpu_run(tmp_path / "out")
    files = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()
    )
    assert len(files) == 8  # what one device call brings back at most
    checks = json.loads((tmp_path / "out/gpu_checks.json").read_text())["checks"]
    assert [c["name"] for c in checks if c["status"] == "failed"] == []
    assert {c.get("note") for c in checks if c["status"] == "skipped"} <= {
        "this CPU has no bf16 LSTM (oneDNN needs AVX-512)"
    }
    assert {"classifier fit at bf16-mixed", "classifier resume from last.ckpt"} <= {c["name"] for c in checks}


@pytest.mark.slow
def test_the_compile_lease_runs_end_to_end_with_tiny_sizes(tmp_path: Path) -> None:
    """``gpu_run.sh OUT compile``: the compiled rows beside eager ones, parity compiled and eager, the profile."""
    gpu_run(tmp_path, "compile")
    (conv,) = (tmp_path / "conv").iterdir()
    rows = json.loads((conv / "amp.json").read_text())["rows"]
    assert [r["precision"] for r in rows] == ["bf16-mixed+channels_last", "bf16-mixed+channels_last+compile"]
    (seq2seq,) = (tmp_path / "seq2seq").iterdir()
    assert "bf16-mixed+compile" in {
        r["precision"] for r in json.loads((seq2seq / "amp.json").read_text())["rows"]
    }
    (folder,) = (p for p in tmp_path.iterdir() if p.name.startswith("cpu-"))
    parity = json.loads((folder / "parity.json").read_text())["rows"]
    assert [r["precision"] for r in parity] == ["bf16-mixed", "bf16-mixed+compile"]
    profile = json.loads((folder / "profile.json").read_text())["rows"]
    assert [r["workload"] for r in profile] == ["classifier"]
    assert profile[0]["hooks"] and profile[0]["plain"]["operators"] and profile[0]["lightning"]["operators"]
    assert {"trace-plain-classifier.json", "trace-lightning-classifier.json"} <= {
        p.name for p in folder.iterdir()
    }
