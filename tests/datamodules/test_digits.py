"""DigitsDataModule and the shared loader pieces: splits, facts, shuffling, what limit_train_batches sees."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import TensorDataset

from datamodules import DigitsDataModule
from shared.resume import EpochShuffle


def test_split_sizes_shapes_and_value_range() -> None:
    data = DigitsDataModule(image_size=28, value_range=(-1.0, 1.0))
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (1258, 180, 359)
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.99
    assert data.dims == (1, 28, 28) and data.num_classes == 10
    assert y.dtype == torch.long and y.min() >= 0 and y.max() <= 9


def test_the_split_is_the_same_in_every_instance_and_changes_with_the_seed() -> None:
    first, second, other = DigitsDataModule(), DigitsDataModule(), DigitsDataModule(seed=7)
    for data in (first, second, other):
        data.setup("fit")
    assert first.val_set.indices == second.val_set.indices
    assert first.val_set.indices != other.val_set.indices
    assert not set(first.train_set.indices) & set(first.test_set.indices)


def test_classes_keeps_those_digits_relabelled_in_order() -> None:
    data = DigitsDataModule(classes=[5, 6, 7, 8, 9], val_fraction=0.0, test_fraction=0.0)
    data.setup("fit")
    labels = torch.cat([y for _, y in data.train_dataloader()])
    assert data.num_classes == 5
    assert sorted(labels.unique().tolist()) == [0, 1, 2, 3, 4]
    assert len(labels) == 182 + 181 + 179 + 174 + 180  # how many 5s, 6s, 7s, 8s and 9s there are


def test_mean_and_std_follow_the_value_range() -> None:
    data = DigitsDataModule(value_range=(-1.0, 1.0), val_fraction=0.0, test_fraction=0.0)
    data.setup("fit")
    pixels = torch.cat([x for x, _ in data.train_dataloader()])
    assert pixels.mean().item() == pytest.approx(data.mean[0], abs=0.01)
    assert pixels.std().item() == pytest.approx(data.std[0], abs=0.01)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave some images"),
        ({"classes": [3, 3]}, "distinct digits"),
        ({"value_range": (1.0, 0.0)}, "low < high"),
    ],
)
def test_bad_arguments_are_named(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(**arguments)


def test_epoch_seeded_sampler_depends_on_seed_and_epoch_only() -> None:
    sampler = EpochShuffle(range(50), seed=3)
    epoch0 = list(sampler)
    torch.manual_seed(123)  # the global state must not matter
    assert list(sampler) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(epoch1) == list(range(50))
    again = EpochShuffle(range(50), seed=3)
    again.set_epoch(1)
    assert list(again) == epoch1


class _IndexedDigits(DigitsDataModule):
    """The digits split, but each training item is its own index, so a test can see what was drawn."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        n = len(self.train_set)
        self.train_set = TensorDataset(torch.arange(n), torch.zeros(n, dtype=torch.long))


class _Recorder(pl.LightningModule):
    """Remembers which training items each epoch saw."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.setdefault(self.current_epoch, []).extend(batch[0].tolist())
        return self.layer(torch.ones(1, 1)).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("shuffle", [False, True])
def test_limit_train_batches_with_and_without_shuffle(shuffle: bool) -> None:
    """Guide topic 19: without shuffle every epoch sees the same first batches and nothing else; with
    shuffle each epoch sees other images, so a few limited epochs cover most of the set."""
    data = _IndexedDigits(batch_size=32, shuffle=shuffle)
    model = _Recorder()
    trainer = pl.Trainer(
        max_epochs=8,
        limit_train_batches=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    per_epoch = [set(model.seen[e]) for e in range(8)]
    covered = set().union(*per_epoch)
    assert all(len(model.seen[e]) == len(per_epoch[e]) == 128 for e in range(8))
    if shuffle:
        assert per_epoch[0] != per_epoch[1]
        assert len(covered) > 600  # of 1,258 training images
    else:
        assert all(seen == per_epoch[0] for seen in per_epoch)
        assert len(covered) == 128
