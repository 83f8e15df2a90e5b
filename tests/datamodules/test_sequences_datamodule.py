"""The generated sequence data: targets, padding, seeding, and no use of the global random state."""

from __future__ import annotations

import pytest
import torch

from datamodules import SequenceDataModule
from datamodules.sequences import make_targets, padding_mask


def small(**overrides: object) -> SequenceDataModule:
    args = {
        "train_size": 40,
        "val_size": 10,
        "test_size": 10,
        "min_length": 30,
        "max_length": 90,
        "batch_size": 8,
    }
    data = SequenceDataModule(**{**args, **overrides})
    data.setup("fit")
    return data


def test_running_sum_targets_lag_the_inputs_by_the_delay() -> None:
    inputs = torch.tensor([[3, 4, 5, 9, 1]])
    assert make_targets(inputs, "running_sum", 10, 0).tolist() == [[3, 7, 2, 1, 2]]
    assert make_targets(inputs, "running_sum", 10, 2).tolist() == [[0, 0, 3, 7, 2]]


def test_delayed_copy_targets_are_the_inputs_delay_steps_ago() -> None:
    inputs = torch.tensor([[3, 4, 5, 9, 1]])
    assert make_targets(inputs, "delayed_copy", 10, 3).tolist() == [[0, 0, 0, 3, 4]]


def test_padding_mask_marks_the_real_steps() -> None:
    mask = padding_mask(torch.tensor([3, 1]), 4)
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False]]


def test_a_batch_holds_sequences_of_varying_length_padded_to_its_longest() -> None:
    data = small()
    inputs, targets, lengths = next(iter(data.train_dataloader()))
    assert len(set(lengths.tolist())) > 1
    assert inputs.shape == targets.shape == (8, int(lengths.max()))
    mask = padding_mask(lengths, inputs.shape[1])
    assert (inputs[~mask] == data.pad_index).all() and (targets[~mask] == data.pad_index).all()
    assert (inputs[mask] < data.vocab_size).all()
    expected = make_targets(torch.where(mask, inputs, 0), "running_sum", data.vocab_size, data.delay)
    assert torch.equal(targets[mask], expected[mask])


def test_the_data_is_reproducible_and_each_split_has_its_own_seed() -> None:
    first, second, other = small(), small(), small(seed=7)
    for split in ("train", "val", "test"):
        for a, b in zip(first.datasets[split].tensors, second.datasets[split].tensors, strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(first.datasets["train"].tensors[0], other.datasets["train"].tensors[0])
    more_training = small(train_size=80)
    assert torch.equal(more_training.datasets["val"].tensors[0], first.datasets["val"].tensors[0])


def test_sizes_vocabulary_and_task_come_from_the_arguments() -> None:
    data = small(vocab_size=5, task="delayed_copy", delay=6, val_size=3)
    inputs, targets, lengths = data.datasets["val"].tensors
    assert len(lengths) == 3 and data.vocab_size == 5 and data.pad_index == 5
    assert int(lengths.min()) >= 30 and int(lengths.max()) <= 90
    mask = padding_mask(lengths, inputs.shape[1])
    assert torch.equal(targets[:, 6:][mask[:, 6:]], inputs[:, :-6][mask[:, 6:]])


def test_building_and_reading_the_data_leaves_the_global_random_state_alone() -> None:
    """A resumed run replays the global random state from its checkpoint; the data must not consume it."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    data = small()
    for loader in (data.train_dataloader(), data.val_dataloader()):
        for epoch in range(2):
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            list(loader)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_shuffle_depends_on_seed_and_epoch_only() -> None:
    data = small()
    loader = data.train_dataloader()
    orders = []
    for epoch in (0, 1, 0):
        loader.sampler.set_epoch(epoch)
        orders.append(torch.cat([inputs[:, 0] for inputs, _, _ in loader]))
    assert torch.equal(orders[0], orders[2]) and not torch.equal(orders[0], orders[1])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"vocab_size": 1}, "data.vocab_size"),
        ({"min_length": 50, "max_length": 20}, "min_length <= max_length"),
        ({"delay": 30, "min_length": 30}, "data.delay"),
        ({"batch_size": 0}, "data.batch_size must be 1 or more"),
    ],
)
def test_bad_values_are_refused_with_the_fix(overrides: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SequenceDataModule(**overrides)
