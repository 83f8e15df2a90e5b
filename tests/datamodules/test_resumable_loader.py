"""The shared training loader resumes a checkpoint written mid-epoch with exactly the batches still due."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules import DigitsDataModule
from shared.resume import ResumableLoader


class BatchLog(pl.LightningModule):
    """Records ``(epoch, batch_idx, sum of the pixels)`` of every training batch: which batch came when."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(64, 1)
        self.seen: list[tuple[int, int, float]] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, _ = batch
        self.seen.append((self.current_epoch, batch_idx, images.sum().item()))
        return self.layer(images.flatten(1)).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(
    tmp_path: Path, shuffle: bool, ckpt_path: str | None = None, workers: int = 0, **trainer_args: object
) -> BatchLog:
    model = BatchLog()
    trainer_args = {"max_epochs": 2, "limit_val_batches": 0, **trainer_args}
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,
    )
    data = DigitsDataModule(batch_size=256, shuffle=shuffle, num_workers=workers)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_mid_epoch_checkpoint_resumes_with_the_batches_still_due(tmp_path: Path, shuffle: bool) -> None:
    whole = _fit(tmp_path / "whole", shuffle)
    assert len(whole.seen) == 10  # 1,258 training images in batches of 256: 5 per epoch

    every_3 = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=3, save_top_k=-1
    )
    _fit(tmp_path / "stopped", shuffle, max_steps=3, callbacks=[every_3])
    resumed = _fit(tmp_path / "resumed", shuffle, ckpt_path=str(tmp_path / "ckpt" / "step=3.ckpt"))
    assert resumed.seen == whole.seen[3:]


@pytest.mark.slow
def test_a_checkpoint_in_a_later_epoch_resumes_that_epochs_order_with_loader_workers(tmp_path: Path) -> None:
    """Lightning makes the resumed loader's iterator before it sets the sampler's epoch, and workers take their
    indices as the iterator is made: the loader makes it at the first batch, when the epoch is set."""
    whole = _fit(tmp_path / "whole", True, workers=2)
    every_4 = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=4, save_top_k=-1
    )
    _fit(tmp_path / "stopped", True, workers=2, max_steps=8, callbacks=[every_4])
    resumed = _fit(tmp_path / "resumed", True, workers=2, ckpt_path=str(tmp_path / "ckpt" / "step=8.ckpt"))
    assert resumed.seen == whole.seen[8:]  # epoch 1's last two batches


def test_an_epoch_end_checkpoint_starts_the_next_epoch_from_its_first_batch(tmp_path: Path) -> None:
    # 2 of 5 batches per epoch: the loader is not exhausted when the epoch ends
    whole = _fit(tmp_path / "whole", True, max_epochs=3, limit_train_batches=2)
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last", save_top_k=1)
    _fit(tmp_path / "stopped", True, max_epochs=1, limit_train_batches=2, callbacks=[every_epoch])
    resumed = _fit(
        tmp_path / "resumed",
        True,
        max_epochs=3,
        limit_train_batches=2,
        ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
    )
    assert resumed.seen == whole.seen[2:]


def test_state_round_trip_skips_only_in_the_saved_epoch() -> None:
    data = DigitsDataModule(batch_size=256, shuffle=False)
    data.setup()
    loader = data.train_dataloader()
    assert isinstance(loader, ResumableLoader)
    everything = [images for images, _ in loader]
    batches = iter(loader)
    next(batches), next(batches)
    state = loader.state_dict()
    assert state == {
        "epoch": 0,
        "batches": 2,
        "batch_size": 256,
        "samples": 1258,
        "seed": None,
        "shuffle": False,
    }

    same_epoch = data.train_dataloader()
    same_epoch.load_state_dict(state)
    rest = [images for images, _ in same_epoch]
    assert len(rest) == len(everything) - 2
    assert all(torch.equal(a, b) for a, b in zip(rest, everything[2:], strict=True))

    next_epoch = data.train_dataloader()
    next_epoch.load_state_dict(state)
    next_epoch.sampler.set_epoch(1)
    assert len(list(next_epoch)) == len(everything)


def test_loaders_leave_the_global_random_state_alone() -> None:
    """Noise drawn in training_step continues identically after a resume only if data loading draws none."""
    data = DigitsDataModule(batch_size=256)
    data.setup()
    state = torch.get_rng_state()
    for loader in (data.train_dataloader(), data.val_dataloader(), data.test_dataloader()):
        next(iter(loader))
    assert torch.equal(torch.get_rng_state(), state)
