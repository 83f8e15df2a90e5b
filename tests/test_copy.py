"""The minimum a copier takes: one system's folder, shared/ and datamodules/, run from an empty project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

# exactly what the top README's "Copying a system" lists, for the GAN (the main job)
MINIMUM = ("systems/gan", "shared", "datamodules")


def test_a_system_copied_with_the_minimum_runs_from_its_own_files(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "systems").mkdir(parents=True)
    shutil.copy(ROOT / "systems" / "__init__.py", project / "systems" / "__init__.py")
    for folder in MINIMUM:
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # mark the copy, so that the run proves which files it imported
    init = project / "systems" / "gan" / "__init__.py"
    init.write_text(init.read_text() + "print('GAN COPY IMPORTED')\n")
    result = subprocess.run(
        [sys.executable, "-m", "systems.gan.train", "fit", "--trainer.fast_dev_run=true"],
        cwd=project,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GAN COPY IMPORTED" in result.stdout
    assert "val/fd" in result.stdout  # trained, validated and scored
    # no other system came along, and none was needed
    assert sorted(p.name for p in (project / "systems").iterdir() if p.is_dir()) == ["gan"]
