"""plain.py: the same truncated-BPTT step without Lightning, ending where the LightningModule ends."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from datamodules.sequences import collate_sequences, make_targets, padding_mask
from systems.seq2seq import Seq2Seq, plain
from tests.helpers import assert_same_weights

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")


def padded_batches() -> DataLoader:
    """Three batches of four sequences of 5 to 29 steps, each batch padded to its longest."""
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(5, 30, (12,), generator=generator)
    mask = padding_mask(lengths, 29)
    inputs = torch.randint(0, 10, (12, 29), generator=generator)
    targets = make_targets(inputs, "running_sum", 10, 2).masked_fill(~mask, 10)
    dataset = TensorDataset(inputs.masked_fill(~mask, 10), targets, lengths)
    return DataLoader(dataset, batch_size=4, collate_fn=collate_sequences)


@pytest.mark.parametrize(
    ("carry_states", "gradient_clip_val"), [(True, 0.05), (False, 0.0)], ids=["carried-clipped", "reset"]
)
def test_plain_train_ends_with_the_lightning_modules_weights(
    carry_states: bool, gradient_clip_val: float
) -> None:
    torch.manual_seed(0)
    hparams = {
        "truncated_bptt_steps": 8,
        "carry_states": carry_states,
        "lr": 1e-2,
        "weight_decay": 0.01,
        "gradient_clip_val": gradient_clip_val,
    }
    lightning = Seq2Seq(hidden_size=12, embedding_dim=6, num_examples=0, **hparams)
    same_start = copy.deepcopy(lightning)
    loader = padded_batches()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(lightning, train_dataloaders=loader)

    steps = []
    losses = plain.train(
        same_start.encoder,
        same_start.decoder,
        loader,
        torch.device("cpu"),
        on_step=lambda: steps.append(1),
        **hparams,
    )
    assert len(losses) == len(steps) == len(loader)
    assert all(not loss.requires_grad and loss.ndim == 0 for loss in losses)
    assert_same_weights(same_start, lightning)


def test_plain_main_trains_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    plain.main(epochs=2, train_size=8, val_size=4, min_length=10, max_length=40, batch_size=4)
    out = capsys.readouterr().out
    assert "trained 2 epochs, 4 batches" in out
    loss, accuracy = map(
        float, re.search(r"validation: loss (\S+) per token, token accuracy (\S+)", out).groups()
    )
    assert loss > 0 and 0 <= accuracy <= 1


def test_plain_py_needs_only_torch_and_model_py() -> None:
    """What ``train`` runs on, at the top of the file; ``main`` alone imports the project's datamodule."""
    tree = ast.parse(Path(plain.__file__).read_text())
    imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "collections.abc", "torch", "systems.seq2seq.model"}
