"""Generated token sequences for streaming transduction: long, of varying length, and needing memory."""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from datamodules.common import check_loader_arguments, make_loader
from shared.errors import require

Task = Literal["running_sum", "delayed_copy"]
# One batch: input tokens (B, T), target tokens (B, T), real lengths (B,); padded places hold ``pad_index``.
SequenceBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def make_targets(inputs: torch.Tensor, task: Task, vocab_size: int, delay: int) -> torch.Tensor:
    """The target token at every step of ``inputs`` (B, T), lagging the inputs by ``delay`` steps (0 before):
    ``running_sum``, the sum modulo ``vocab_size`` of all inputs up to ``delay`` steps ago (it depends on the
    whole history); ``delayed_copy``, the input ``delay`` steps ago (it depends on the last ``delay``)."""
    reported = inputs.cumsum(dim=1) % vocab_size if task == "running_sum" else inputs
    return F.pad(reported, (delay, 0))[:, : inputs.shape[1]]  # shifted right by delay, zeros before


def padding_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B, max_length) booleans, True at the real steps of each sequence and False at its padding."""
    return torch.arange(max_length, device=lengths.device) < lengths.unsqueeze(1)


def pad_steps(tokens: torch.Tensor, length: int, pad: int) -> torch.Tensor:
    """(B, T) tokens padded with ``pad`` to (B, ``length``) steps."""
    return F.pad(tokens, (0, length - tokens.shape[1]), value=pad)


def collate_sequences(samples: list[tuple[torch.Tensor, ...]]) -> SequenceBatch:
    """Stack the samples and cut the padding down to the longest sequence of this batch."""
    inputs, targets, lengths = (torch.stack(column) for column in zip(*samples, strict=True))
    longest = int(lengths.max())
    return inputs[:, :longest], targets[:, :longest], lengths


class SequenceDataModule(pl.LightningDataModule):
    """Sequences of random tokens in ``[0, vocab_size)`` with one target token per input token, padded with
    ``pad_index`` (``vocab_size``) to the longest of their batch, their lengths alongside to mask the loss.

    Args:
        task: ``running_sum`` (a target depends on the whole history) or ``delayed_copy`` (on one past input).
        vocab_size: number of distinct tokens, in inputs and targets alike.
        delay: steps by which the targets lag the inputs: a streaming model must carry the last ``delay``
            inputs across every chunk border in its state.
        min_length: shortest sequence.
        max_length: longest sequence.
        train_size: sequences in the training split.
        val_size: sequences in the validation split.
        test_size: sequences in the test split (also the one ``predict`` streams).
        batch_size: sequences per batch.
        shuffle: shuffle the training set each epoch (seeded by ``seed`` and the epoch).
        num_workers: DataLoader worker processes (the data is a tensor in memory: 0 is fastest).
        seed: seed of the generated data and of the shuffle.
    """

    def __init__(
        self,
        task: Task = "running_sum",
        vocab_size: int = 10,
        delay: int = 4,
        min_length: int = 100,
        max_length: int = 300,
        train_size: int = 1000,
        val_size: int = 200,
        test_size: int = 200,
        batch_size: int = 32,
        shuffle: bool = True,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # in checkpoints, for ``predict`` on one's own lines (own.py)
        require(vocab_size >= 2, f"data.vocab_size must be 2 or more, got {vocab_size}.")
        lengths = f"data.min_length ({min_length}) and data.max_length ({max_length})"
        require(1 <= min_length <= max_length, f"{lengths} must satisfy 1 <= min_length <= max_length.")
        fix = "every sequence needs steps to report, so lower data.delay or raise data.min_length"
        require(0 <= delay < min_length, f"data.delay must be in [0, {min_length}), got {delay}: {fix}.")
        sizes = {"train": train_size, "val": val_size, "test": test_size}
        require(min(sizes.values()) >= 1, "data.train_size, val_size and test_size must be 1 or more.")
        check_loader_arguments(batch_size, num_workers)
        self.task, self.vocab_size, self.delay, self.sizes = task, vocab_size, delay, sizes
        self.min_length, self.max_length, self.pad_index = min_length, max_length, vocab_size
        self.batch_size, self.num_workers, self.shuffle, self.seed = batch_size, num_workers, shuffle, seed
        self.datasets: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Each split from its own seeded generator, once: the same data in every process and run, and no draw
        from the global random state (a resumed run sees what an uninterrupted one would)."""
        if self.datasets:  # fit, validate and test each call it
            return
        for index, (split, size) in enumerate(self.sizes.items()):
            # a seed per (seed, split): the validation data stays the same when train_size changes
            generator = torch.Generator().manual_seed(self.seed * len(self.sizes) + index)
            lengths = torch.randint(self.min_length, self.max_length + 1, (size,), generator=generator)
            inputs = torch.randint(0, self.vocab_size, (size, self.max_length), generator=generator)
            targets = make_targets(inputs, self.task, self.vocab_size, self.delay)
            padding = ~padding_mask(lengths, self.max_length)
            padded = (t.masked_fill(padding, self.pad_index) for t in (inputs, targets))
            self.datasets[split] = TensorDataset(*padded, lengths)

    def train_dataloader(self) -> DataLoader:
        return make_loader(self, self.datasets["train"], True, collate_sequences)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self, self.datasets["val"], False, collate_sequences)

    def test_dataloader(self) -> DataLoader:
        return make_loader(self, self.datasets["test"], False, collate_sequences)

    def predict_dataloader(self) -> DataLoader:
        return make_loader(self, self.datasets["test"], False, collate_sequences)
