"""The shared callbacks on their own: the metrics table survives what broke pl_bolts' version."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared.table import MetricsTable, format_row


class _ReturnsOutputs(pl.LightningModule):
    """A module whose validation_step returns a dict: pl_bolts' PrintTableMetricsCallback crashed on it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("val/loss", loss)
        return {"loss": loss, "outputs": self.layer(batch[0])}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_table_has_a_row_per_epoch_even_when_validation_returns_outputs() -> None:
    loader = DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=4)
    table = MetricsTable()
    trainer = pl.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[table]
    )
    trainer.fit(_ReturnsOutputs(), loader, loader)
    assert [row["epoch"] for row in table.rows] == [0, 1, 2]
    assert table.rows[0]["val/loss"] > table.rows[2]["val/loss"]
    assert "train/loss_step" not in table.rows[0] and "train/loss" in table.rows[0]


def test_format_row_aligns_names_over_values() -> None:
    header, rule, values = format_row({"epoch": 3, "val/acc": 0.98765}).splitlines()
    assert header == "epoch │ val/acc"
    assert values == "3     │ 0.9877 "
    assert set(rule) == {"─"}
