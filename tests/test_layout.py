"""The anatomy every system promises (the top README): plain-torch models, no system importing another."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml

from shared.cli import BestCheckpoint, Trainer
from tests.helpers import ROOT

SYSTEMS = sorted(p.name for p in (ROOT / "systems").iterdir() if (p / "module.py").exists())
SYSTEM_CLASSES = {
    "classifier": "Classifier",
    "gan": "GAN",
    "seq2seq": "Seq2Seq",
    "transfer": "TransferLearner",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return names


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_system_folder_has_its_anatomy(system: str) -> None:
    folder = ROOT / "systems" / system
    for name in ("__init__.py", "model.py", "module.py", "plain.py", "train.py", "config.yaml", "README.md"):
        assert (folder / name).is_file(), name
    package = importlib.import_module(f"systems.{system}")
    exported = [getattr(package, name) for name in package.__all__]
    assert any(isinstance(obj, type) and issubclass(obj, pl.LightningModule) for obj in exported)


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("file", ["model.py", "plain.py"])
def test_model_py_and_plain_py_are_plain_torch(system: str, file: str) -> None:
    imports = imported_modules(ROOT / "systems" / system / file)
    assert not {name for name in imports if name.split(".")[0] in ("pytorch_lightning", "lightning")}


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_system_imports_no_other_system(system: str) -> None:
    for path in (ROOT / "systems" / system).glob("*.py"):
        for name in imported_modules(path):
            parts = name.split(".")
            assert parts[0] != "systems" or parts[1:2] == [system], f"{path.name} imports {name}"


def defaults(*classes: type) -> dict[str, object]:
    """The keyword defaults of the classes' signatures, the first class's winning."""
    found: dict[str, object] = {}
    for cls in reversed(classes):
        found |= {
            k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty
        }
    return found


@pytest.mark.parametrize("system", SYSTEMS)
def test_config_yaml_holds_only_what_differs_from_the_signatures(system: str) -> None:
    """One source per default: a setting in ``config.yaml`` equal to its argument's default would be a second one."""
    config = yaml.safe_load((ROOT / "systems" / system / "config.yaml").read_text())
    data = config["data"] if isinstance(config["data"], dict) else {"class_path": config["data"]}
    module, name = data["class_path"].rsplit(".", 1)
    model = getattr(importlib.import_module(f"systems.{system}"), SYSTEM_CLASSES[system])
    sections = {
        "trainer": (config.get("trainer", {}), defaults(Trainer, pl.Trainer)),
        "checkpoint": (config.get("checkpoint", {}), defaults(BestCheckpoint)),
        "model": (config.get("model", {}), defaults(model)),
        "data": (data.get("init_args", {}), defaults(getattr(importlib.import_module(module), name))),
    }
    repeated = [
        f"{section}.{key}"
        for section, (given, signature) in sections.items()
        for key, value in given.items()
        if key in signature and json.dumps(value) == json.dumps(signature[key])
    ]
    assert not repeated, f"config.yaml repeats these defaults: {repeated}"
    assert all(key in signature for given, signature in sections.values() for key in given)
