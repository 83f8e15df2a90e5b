"""plain.py, the training step without Lightning: it ends with the LightningModule's weights, bit for bit,
needs nothing but torch and model.py to train, and its command runs on its own."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from systems.transfer import TransferLearner
from systems.transfer.model import build_backbone
from systems.transfer.plain import main, train
from systems.transfer.weights import PRETRAINED_BACKBONE
from tests.helpers import ROOT

SIZE = 16
CASES = {
    "frozen": {},
    "layer3-4 unfrozen, BatchNorm frozen": {"unfreeze_at_epoch": 0, "unfreeze_stages": 2},
    "all unfrozen, BatchNorm training": {"unfreeze_at_epoch": 0, "unfreeze_stages": 5, "bn_policy": "train"},
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=list(CASES))
def test_train_ends_with_the_weights_of_the_lightning_module(overrides: dict[str, Any]) -> None:
    torch.manual_seed(0)
    module = TransferLearner(
        num_classes=5, image_shape=(1, SIZE, SIZE), weights=None, lr=1e-2, backbone_lr=1e-3, **overrides
    )
    start = copy.deepcopy(module)
    nets = copy.deepcopy(module)
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.rand(8, 1, SIZE, SIZE, generator=generator), torch.randint(0, 5, (8,), generator=generator))
        for _ in range(3)
    ]
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    hp = module.hparams
    losses = train(
        nets.normalize,
        nets.backbone,
        nets.head,
        batches,
        torch.device("cpu"),
        lr=hp.lr,
        backbone_lr=hp.backbone_lr,
        weight_decay=hp.weight_decay,
        bn_policy=hp.bn_policy,
    )
    assert len(losses) == 3 and not any(loss.requires_grad for loss in losses)
    expected, got, before = module.state_dict(), nets.state_dict(), start.state_dict()
    assert set(expected) == set(got)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
    assert not torch.equal(got["head.1.weight"], before["head.1.weight"])  # it did train


def test_train_needs_only_torch_and_model_py() -> None:
    """What plain.py imports at the top (main() imports the data and the weight file's reader itself)."""
    tree = ast.parse((ROOT / "systems" / "transfer" / "plain.py").read_text())
    imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert {
        name for name in imported if name.split(".")[0] not in ("__future__", "argparse", "collections")
    } == {
        "pathlib",
        "torch",
        "torch.nn.functional",
        "systems.transfer.model",
    }


def test_main_trains_a_head_and_prints_the_loss_and_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--epochs=1"])
    out = capsys.readouterr().out
    assert f"No backbone at {PRETRAINED_BACKBONE}" in out
    assert "epoch 0: training loss" in out and "epoch 1" not in out
    assert "validation accuracy" in out and "test accuracy" in out
    # the backbone pretrain exports is the one it starts from when there is one
    Path(PRETRAINED_BACKBONE).parent.mkdir(parents=True)
    torch.save(build_backbone("resnet18")[0].state_dict(), PRETRAINED_BACKBONE)
    main(["--epochs=2"])
    out = capsys.readouterr().out
    assert "No backbone" not in out and "epoch 1: training loss" in out
