"""A callback for the DDP test, imported by the training processes: each rank saves its final weights."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class SaveWeightsPerRank(pl.Callback):
    """Write ``weights-rank<R>.pt`` (the whole module's state_dict) into the working folder when fit ends."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save(pl_module.state_dict(), f"weights-rank{trainer.global_rank}.pt")
