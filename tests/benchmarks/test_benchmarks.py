"""Both benchmark commands at tiny sizes on the CPU: the output's schema and its sanity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
from packaging.version import Version

from benchmarks import amp, parity
from benchmarks.runner import bf16_lstm_runs_on_this_cpu
from benchmarks.workloads import WORKLOADS

TINY = ["--accelerator=cpu", "--preset=tiny", "--warmup=2", "--window=2", "--repeats=2"]


def only_folder(root: Path) -> Path:
    (folder,) = root.iterdir()
    return folder


def test_amp_times_every_cpu_mode_and_skips_the_gpu_ones(tmp_path: Path) -> None:
    payload = amp.main([*TINY, "--runs=2", "--workloads", "classifier", "--out", str(tmp_path)])
    folder = only_folder(tmp_path)
    assert folder.name.startswith("cpu-")
    assert {p.name for p in folder.iterdir()} == {"amp.json", "amp.md", "amp.png"}
    assert json.loads((folder / "amp.json").read_text()) == payload
    rows = {row["precision"]: row for row in payload["rows"]}
    assert rows["tf32"]["status"] == rows["16-mixed"]["status"] == "skipped"
    assert "CUDA" in rows["tf32"]["note"]
    for name in ("fp32", "bf16-mixed", "bf16-mixed+channels_last"):
        row = rows[name]
        assert row["status"] == "ok"
        assert len(row["run_step_s"]) == 2
        assert 0 < row["min_step_s"] <= row["median_step_s"] <= row["max_step_s"]
        assert row["items_per_s"] == pytest.approx(16 / row["median_step_s"])
        assert row["peak_memory_mib"] is None  # no GPU, no GPU memory
    assert rows["fp32"]["speedup_vs_fp32"] == 1.0
    assert "skipped: needs a CUDA GPU" in (folder / "amp.md").read_text()


def test_parity_runs_both_loops_and_their_losses_agree(tmp_path: Path) -> None:
    payload = parity.main(
        [*TINY, "--workloads", "classifier", "--precisions", "fp32", "--runs=2", "--out", str(tmp_path)]
    )
    (row,) = payload["rows"]
    assert row["status"] == "ok" and len(row["ratios"]) == 2
    assert row["min_ratio"] <= row["median_ratio"] <= row["max_ratio"]
    assert row["same_result"] and row["max_weight_difference"] <= 1e-5 and row["max_loss_difference"] <= 1e-5
    table = (only_folder(tmp_path) / "parity.md").read_text()
    assert "| classifier | fp32 |" in table and "| yes (weights differ by" in table


def test_a_benchmark_writes_only_its_results(tmp_path: Path) -> None:
    """Its Trainer has no logger, so Lightning's log folder is the working folder: the GAN's sample grid,
    drawn after the last epoch, must not land there (it did, as ``samples/epoch=000.png``)."""
    amp.main(
        [*TINY, "--runs=1", "--workloads", "gan", "--precisions", "fp32", "--out", str(tmp_path / "out")]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_size_override_must_name_a_known_key(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"WORKLOAD\.KEY=N"):
        amp.main([*TINY, "--workloads", "classifier", "--size", "classifier.depth=3", "--out", str(tmp_path)])


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_workload_has_the_three_presets_with_the_same_keys(name: str) -> None:
    presets = WORKLOADS[name].presets
    assert presets.keys() == {"gpu", "cpu", "tiny"}
    assert presets["gpu"].keys() == presets["cpu"].keys() == presets["tiny"].keys()


# the full ResNet-50-sized transfer run takes 20 s here: the slow suite's
PARITY = [pytest.param(n, marks=pytest.mark.slow) if n == "transfer-full" else n for n in sorted(WORKLOADS)]


@pytest.mark.parametrize("name", PARITY)
def test_each_plain_loop_does_what_its_lightning_module_does(name: str, tmp_path: Path) -> None:
    """The parity ratio means something only if both loops do the same arithmetic: same final weights."""
    precisions = ["fp32", "bf16-mixed"] if name != "seq2seq" or bf16_lstm_runs_on_this_cpu() else ["fp32"]
    if name == "gan" and Version(pl.__version__) < Version("2.5.5"):  # its autocast kept the cast cache then,
        precisions = [
            "fp32"
        ]  # where the plain loop, as Lightning since, turns it off: bf16 rounds differently
    payload = parity.main(
        [*TINY, "--workloads", name, "--precisions", *precisions, "--runs=1", "--out", str(tmp_path)]
    )
    for row in payload["rows"]:
        assert row["same_result"], (row["precision"], row["max_weight_difference"])


@pytest.mark.slow
# transfer-full's module is transfer-frozen's, unfrozen
@pytest.mark.parametrize("name", sorted(set(WORKLOADS) - {"transfer-full"}))
def test_compile_adds_a_compiled_row_whose_loops_still_agree(name: str, tmp_path: Path) -> None:
    """``--compile``: each precision twice, eager and ``+compile``, in both benchmarks; the plain loop runs the
    networks the system compiled, so Lightning and plain still end with the same weights."""
    args = [*TINY, "--workloads", name, "--precisions", "fp32", "--runs=1"]
    timed = amp.main([*args, "--compile", "--out", str(tmp_path / "amp")])
    assert [(r["precision"], r["status"]) for r in timed["rows"]] == [("fp32", "ok"), ("fp32+compile", "ok")]
    assert "| fp32+compile |" in (only_folder(tmp_path / "amp") / "amp.md").read_text()
    compared = parity.main([*args, "--compile", "--out", str(tmp_path / "parity")])
    compiled = compared["rows"][1]
    assert compiled["precision"] == "fp32+compile"
    assert compiled["same_result"], compiled["max_weight_difference"]
