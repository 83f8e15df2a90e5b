"""Private parts of Lightning and torch: every use named in one place, ``shared/cli.py``, each with a test that fails
when it changes.

The uses: ``SystemCLI._parse_ckpt_path`` overrides LightningCLI's (2.5.5+), which puts a checkpoint's
hyper-parameters over the flags given with ``--ckpt_path``; ``tests/shared/test_resume_settings.py`` holds its effect
(a ``--model.lr`` given with ``--ckpt_path`` takes effect), this file that it still overrides something. And
``kept_rows`` reads the step a resumed run logs at from the checkpoint's ``_batches_that_stepped``, which this file
holds is where Lightning writes it. No other private name is used anywhere in the project's code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytorch_lightning as pl
import torch
from packaging.version import Version
from pytorch_lightning.cli import LightningCLI

from shared.cli import SystemCLI
from tests.helpers import ROOT

# LightningCLI has the method from 2.5.5 (the floor, 2.5.2, has not: there the override is a plain method)
ALLOWED = {("shared/cli.py", "def _parse_ckpt_path")} if hasattr(LightningCLI, "_parse_ckpt_path") else set()
CODE = ("shared", "systems", "datamodules", "benchmarks")
KNOWN = {"LightningCLI": LightningCLI, "Trainer": pl.Trainer, "LightningModule": pl.LightningModule}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _overrides(tree: ast.Module, method: ast.FunctionDef) -> bool:
    """Whether a Lightning class that the method's class derives from already defines the method."""
    bases = [
        KNOWN.get(ast.unparse(b).split(".")[-1], object)
        for c in ast.walk(tree)
        if isinstance(c, ast.ClassDef) and method in c.body
        for b in c.bases
    ]
    return any(method.name in vars(cls) for base in bases for cls in base.__mro__)


def private_uses(path: Path, root: Path = ROOT) -> set[tuple[str, str]]:
    """``x._name`` on anything but ``self``/``cls``; a ``_name`` or ``_module`` imported from outside the project;
    a method ``_name`` whose class's Lightning base already defines it."""
    tree, where, found = ast.parse(path.read_text()), str(path.relative_to(root)), set()
    own = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.add((where, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] not in CODE:
            names = [node.module, *(alias.name for alias in node.names)]
            found |= {
                (where, f"from {node.module} import {n}") for n in names if any(map(_private, n.split(".")))
            }
        elif isinstance(node, ast.FunctionDef) and _private(node.name) and _overrides(tree, node):
            found.add((where, f"def {node.name}"))
    return found


def test_no_private_name_of_lightning_or_torch_is_used_but_the_one_named() -> None:
    uses = {use for folder in CODE for path in (ROOT / folder).rglob("*.py") for use in private_uses(path)}
    assert uses == ALLOWED


def test_the_overridden_private_method_still_exists_where_lightning_merges_checkpoint_hparams() -> None:
    if Version(pl.__version__) >= Version("2.5.5"):
        assert callable(getattr(LightningCLI, "_parse_ckpt_path", None)), (
            "LightningCLI renamed it: find the merge anew"
        )
    assert SystemCLI._parse_ckpt_path is not getattr(LightningCLI, "_parse_ckpt_path", None)


def test_the_scan_finds_each_kind_of_private_use(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import torch\nfrom torch.nn.modules.batchnorm import _BatchNorm\nfrom pytorch_lightning.cli import LightningCLI\n"
        "x = torch.optim.Adam._cuda_graph_capture_health_check\nclass C(LightningCLI):\n"
        "    def _parse_ckpt_path(self): ...\n    def _mine(self): return self._mine()\n"
    )
    assert {use for _, use in private_uses(probe, tmp_path)} == {
        "from torch.nn.modules.batchnorm import _BatchNorm",
        "torch.optim.Adam._cuda_graph_capture_health_check",
        *(("def _parse_ckpt_path",) if hasattr(LightningCLI, "_parse_ckpt_path") else ()),
    }


def test_a_checkpoint_holds_the_logging_step_where_kept_rows_reads_it(tmp_path: Path) -> None:
    """Two batches in: the step the next metrics are logged at is 2, under the loops' private key."""
    from datamodules import DigitsDataModule
    from shared.cli import kept_rows
    from systems.classifier import Classifier

    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False)
    trainer.fit(Classifier(), datamodule=DigitsDataModule())
    trainer.save_checkpoint(tmp_path / "two.ckpt")
    checkpoint = torch.load(tmp_path / "two.ckpt", weights_only=True)
    rows = b"epoch,step,x\r\n0,0,a\r\n0,1,b\r\n0,2,c\r\n"
    assert [row["x"] for row in kept_rows(checkpoint, rows)] == ["a", "b"]
