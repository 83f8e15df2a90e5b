"""Copying a system: its folder plus the project files it imports and its config names, into an empty project.

Counted as the copy issue counts: the Python lines of what ``train.py`` imports and of the classes ``config.yaml``
names; the copy also takes the rest of the folder (``plain.py``, the transfer system's ``pretrain.py``...) and what
that imports. The top README's copy table states both figures, and this test holds it to them.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import ROOT

LOCAL = ("systems", "shared", "datamodules")
SYSTEMS = sorted(p.name for p in (ROOT / "systems").iterdir() if (p / "train.py").is_file())


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    return next((f for f in (base / "__init__.py", base.with_suffix(".py")) if f.is_file()), None)


def imported(path: Path) -> list[str]:
    """The modules ``path`` imports anywhere (not under ``if TYPE_CHECKING``), and their packages."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    names = []
    for node in ast.walk(tree):
        if id(node) not in skipped and isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif id(node) not in skipped and isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    parts = [name.split(".") for name in names if name.split(".")[0] in LOCAL]
    return [".".join(p[:i]) for p in parts for i in range(1, len(p) + 1)]


def named_classes(config: Path) -> list[str]:
    """The project's classes a config file names (``class_path: datamodules.X``, or a bare ``shared.y.Z``)."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict | list):
            for item in value.values() if isinstance(value, dict) else value:
                walk(item)
        elif isinstance(value, str) and re.fullmatch(rf"({'|'.join(LOCAL)})(\.\w+)+", value):
            found.append(value)

    walk(yaml.safe_load(config.read_text()))
    return found


def closure(starts: list[Path], classes: list[str]) -> set[Path]:
    todo, files = [*starts, module_file("systems")], set()
    for (
        path
    ) in classes:  # where the class really lives: datamodules/__init__.py names it, its own file holds it
        module, name = path.rsplit(".", 1)
        home = getattr(importlib.import_module(module), name).__module__.split(".")
        todo += [module_file(".".join(home[:i])) for i in range(1, len(home) + 1)]
    while todo:
        if (path := todo.pop()) is not None and path not in files:
            files.add(path)
            todo += [module_file(name) for name in imported(path)]
    return files


def copy_of(system: str) -> tuple[set[Path], set[Path]]:
    """What the count counts (the entry points' imports and the named classes), and what a copy takes."""
    folder = ROOT / "systems" / system
    every_config = [c for config in folder.glob("*config.yaml") for c in named_classes(config)]
    counted = closure([folder / "train.py"], named_classes(folder / "config.yaml"))
    return counted, closure(sorted(folder.glob("*.py")), every_config)


def lines(files: set[Path]) -> int:
    return sum(len(f.read_text().splitlines()) for f in files)


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_system_copies_in_the_lines_the_readme_says(system: str) -> None:
    """The README's copy table is the measurement: a change that adds or removes lines updates it."""
    counted, copied = copy_of(system)
    row = f"| `{system}` | {lines(counted)} | {lines(copied)} |"
    files = sorted((lines({f}), str(f.relative_to(ROOT))) for f in counted)
    assert row in (ROOT / "README.md").read_text(), f"the README's copy table wants the row {row}: {files}"


def test_each_module_py_is_as_long_as_the_readme_says() -> None:
    """The LightningModule's file, its pattern on the first screen and the extras in callbacks beside it: the README
    states each length (the aim is 180 lines at most), and this test holds it to them."""
    sizes = ", ".join(
        f"`{s}` {len((ROOT / 'systems' / s / 'module.py').read_text().splitlines())}" for s in SYSTEMS
    )
    assert f"`module.py` lines: {sizes}." in (ROOT / "README.md").read_text()


# a test's own callback, beside the copy: SIGINT to this process after the given batch of the given epoch
STOPPER = """
import os, signal
import pytorch_lightning as pl

class Stop(pl.Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGINT)
"""
RUN = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1"]
RUN += ["--trainer.deterministic=true", "--trainer.enable_progress_bar=false", "--test_after_fit=false"]
SMALL = {
    "classifier": [],
    "gan": ["--model.width=8", "--trainer.check_val_every_n_epoch=1", "--model.judge_samples=64"],
    "seq2seq": ["--data.train_size=128", "--data.val_size=32", "--data.test_size=32"],
    "transfer": [],
}


@pytest.mark.slow
@pytest.mark.parametrize("system", SYSTEMS)
def test_a_copied_system_trains_and_resumes_after_ctrl_c_exactly(system: str, tmp_path: Path) -> None:
    """The copy, in an empty folder without PYTHONPATH, trains through its own ``train.py``; stopped by Ctrl-C in
    its second epoch and resumed from ``interrupted.ckpt``, it ends with the weights of an uninterrupted run."""
    project = tmp_path / "project"
    for path in copy_of(system)[1]:
        (project / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, project / path.relative_to(ROOT))
    shutil.copytree(
        ROOT / "systems" / system,
        project / "systems" / system,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("*.py", "__pycache__"),
    )
    (project / "stopper.py").write_text(STOPPER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def train(module: str, *flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", f"systems.{system}.{module}", "fit", *RUN, *SMALL[system], *flags]
        return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)

    if system == "transfer":  # the source backbone first, as the README says
        assert train("pretrain", "--trainer.max_epochs=1").returncode == 0
    assert (straight := train("train")).returncode == 0, straight.stderr[-3000:]
    stop = '--trainer.callbacks+={"class_path": "stopper.Stop", "init_args": {"epoch": 1, "batch": 1}}'
    stopped = train("train", stop)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    interrupted = project / "lightning_logs" / system / "version_1/checkpoints/interrupted.ckpt"
    assert (resumed := train("train", f"--ckpt_path={interrupted}")).returncode == 0, resumed.stderr[-3000:]
    # the resume went on in the stopped run's folder, version_1
    runs = [project / "lightning_logs" / system / f"version_{n}/checkpoints/last.ckpt" for n in (0, 1)]
    assert not (project / "lightning_logs" / system / "version_2").exists()
    first, last = (torch.load(p, weights_only=True)["state_dict"] for p in (runs[0], runs[-1]))
    assert (
        torch.load(runs[-1], weights_only=True)["global_step"]
        == torch.load(runs[0], weights_only=True)["global_step"]
    )
    assert all(torch.equal(first[k], last[k]) for k in first) and first.keys() == last.keys()
