"""last.ckpt is written after every training epoch, whatever the validation cadence."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from shared.resume import LastCheckpoint


def test_last_ckpt_after_each_epoch_when_validation_runs_every_third(tmp_path: Path) -> None:
    last = LastCheckpoint()
    last.dirpath = str(tmp_path)
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=2,
        check_val_every_n_epoch=3,
        callbacks=[last],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 1
