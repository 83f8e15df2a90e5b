"""Generated token sequences for streaming transduction: long, of varying length, and needing memory."""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from datamodules.common import check_loader_arguments, make_loader
from shared.errors import require

TASKS = ("running_sum", "delayed_copy")
_SPLITS = ("train", "val", "test")

# One batch: input tokens (B, T), target tokens (B, T), real lengths (B,); padded places hold ``pad_index``.
SequenceBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def make_targets(inputs: torch.Tensor, task: str, vocab_size: int, delay: int) -> torch.Tensor:
    """The target token at every step of ``inputs`` (B, T); targets lag the inputs by ``delay`` steps.

    ``running_sum``: the sum modulo ``vocab_size`` of all inputs up to ``delay`` steps ago; it depends on
    the whole history. ``delayed_copy``: the input ``delay`` steps ago; it depends on the last ``delay``
    steps. Before step ``delay`` there is nothing to report yet and the target is 0.
    """
    if task == "running_sum":
        reported = inputs.cumsum(dim=1) % vocab_size
    elif task == "delayed_copy":
        reported = inputs
    else:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    targets = torch.zeros_like(inputs)
    targets[:, delay:] = reported[:, : inputs.shape[1] - delay]
    return targets


def padding_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B, max_length) booleans, True at the real steps of each sequence and False at its padding."""
    return torch.arange(max_length, device=lengths.device) < lengths.unsqueeze(1)


def collate_sequences(samples: list[tuple[torch.Tensor, ...]]) -> SequenceBatch:
    """Stack the samples and cut the padding down to the longest sequence of this batch."""
    inputs, targets, lengths = (torch.stack(column) for column in zip(*samples, strict=True))
    longest = int(lengths.max())
    return inputs[:, :longest], targets[:, :longest], lengths


class SequenceDataModule(pl.LightningDataModule):
    """Sequences of random tokens in ``[0, vocab_size)`` with one target token per input token.

    Each split is generated once in ``setup`` from its own seeded generator: the same data in every
    process and run, and no draw from the global random state (so a resumed run sees what an
    uninterrupted one would). A batch is padded to its longest sequence with ``pad_index``; the lengths
    come with it so that the loss can be masked.

    Args:
        task: ``running_sum`` (targets depend on the whole history) or ``delayed_copy`` (on the last
            ``delay`` steps).
        vocab_size: number of distinct tokens, in inputs and targets alike.
        delay: steps by which the targets lag the inputs. A streaming model must then carry the last
            ``delay`` inputs across every chunk border in its state.
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
        task: Literal["running_sum", "delayed_copy"] = "running_sum",
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
        require(vocab_size >= 2, f"data.vocab_size must be 2 or more, got {vocab_size}.")
        require(
            1 <= min_length <= max_length,
            f"data.min_length ({min_length}) and data.max_length ({max_length}) must satisfy "
            "1 <= min_length <= max_length.",
        )
        require(
            0 <= delay < min_length,
            f"data.delay must be in [0, min_length={min_length}), got {delay}: every sequence needs steps to "
            "report, so lower data.delay or raise data.min_length.",
        )
        require(
            min(train_size, val_size, test_size) >= 1,
            "data.train_size, data.val_size and data.test_size must be 1 or more.",
        )
        check_loader_arguments(batch_size, num_workers)
        self.batch_size, self.num_workers, self.shuffle, self.seed = batch_size, num_workers, shuffle, seed
        self.task = task
        self.vocab_size = vocab_size
        self.delay = delay
        self.min_length = min_length
        self.max_length = max_length
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        # the padding token: one past the real ones, so models give it its own embedding row
        self.pad_index = vocab_size
        self.datasets: dict[str, Dataset] = {}

    def generate(self, split: str) -> TensorDataset:
        """Generate one split: inputs and targets padded to ``max_length``, and the real lengths."""
        index = _SPLITS.index(split)
        # a seed per (seed, split): the validation data stays the same when train_size changes
        generator = torch.Generator().manual_seed(self.seed * len(_SPLITS) + index)
        n = self.sizes[split]
        lengths = torch.randint(self.min_length, self.max_length + 1, (n,), generator=generator)
        inputs = torch.randint(0, self.vocab_size, (n, self.max_length), generator=generator)
        targets = make_targets(inputs, self.task, self.vocab_size, self.delay)
        padding = ~padding_mask(lengths, self.max_length)
        inputs[padding] = self.pad_index
        targets[padding] = self.pad_index
        return TensorDataset(inputs, targets, lengths)

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = {split: self.generate(split) for split in _SPLITS}

    def _loader(self, split: str) -> DataLoader:
        require(split in self.datasets, f"{type(self).__name__}.setup() has not built the {split} split yet.")
        return make_loader(self, self.datasets[split], split == "train", collate_sequences)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
