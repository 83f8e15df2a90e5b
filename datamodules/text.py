"""Any UTF-8 text file as streams of characters for next-character prediction with states carried across batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.common import check_loader_arguments, make_loader
from shared.errors import UserError, require

MAKE_BOOK = "bible -f -l0 'gen1:1-rev22:21' | cut -d' ' -f2- > kjv.txt"  # the King James Bible (bible-kjv)


def read_characters(path: str | Path) -> tuple[str, torch.Tensor]:
    """The file's distinct characters in code-point order, and the file as their indices (int64); one sentence
    naming the file and the fix if it cannot be read, is empty or is not UTF-8 text."""
    fix = f"pass a UTF-8 text file with --data.init_args.path=FILE (the King James Bible: {MAKE_BOOK})"
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise UserError(f"{path} cannot be read ({error.strerror}): {fix}.") from None
    require(len(raw) > 0, f"{path} is empty: {fix}.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path} is not UTF-8 text (byte {error.start} is not): it looks binary; {fix}."
        ) from None
    require("\0" not in text, f"{path} holds NUL characters: it looks binary; {fix}.")
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    alphabet, ids = np.unique(points, return_inverse=True)
    return "".join(map(chr, alphabet)), torch.from_numpy(ids.astype(np.int64))


class Streams(Dataset):
    """``text`` laid out as ``streams`` parallel rows (pytorch/examples' ``batchify``), cut along time into windows
    of ``seq_length``. Item ``i`` is row ``i % streams`` of window ``i // streams``: read in order by ``streams``
    a batch is one window of every row, so batch j+1 continues batch j in every row. Items are (inputs, targets,
    length), targets the next characters, as ``SequenceBatch`` rows without padding."""

    def __init__(self, text: torch.Tensor, streams: int, seq_length: int) -> None:
        columns = (len(text) - 1) // streams
        self.inputs = text[: streams * columns].view(streams, columns)
        self.targets = text[1 : streams * columns + 1].view(streams, columns)
        self.streams, self.seq_length = streams, seq_length
        self.windows = -(-columns // seq_length)

    def __len__(self) -> int:
        return self.streams * self.windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row, window = index % self.streams, index // self.streams
        cut = slice(window * self.seq_length, (window + 1) * self.seq_length)
        inputs, targets = self.inputs[row, cut], self.targets[row, cut]
        return inputs, targets, torch.tensor(len(inputs))


class TextDataModule(pl.LightningDataModule):
    """A UTF-8 text file as characters: the first part trains, the next ``val_fraction`` validates, the last
    ``test_fraction`` tests; each split is ``batch_size`` contiguous streams in windows of ``seq_length``, in order
    (never shuffled: each batch continues the one before). The vocabulary is the file's distinct characters.

    Args:
        path: the text file (for the King James Bible, ``MAKE_BOOK`` writes one).
        seq_length: characters per row of a batch (the model cuts it further into chunks).
        batch_size: parallel streams, the rows of every batch.
        val_fraction: share of the text, after the training part, held out for validation.
        test_fraction: share of the text at its end held out for testing (and ``predict``).
        num_workers: DataLoader worker processes (the text is a tensor in memory: 0 is fastest).
        seed: seed of the loaders' generators (the order is fixed).
    """

    shuffle = False  # the streams must stay in order

    def __init__(
        self,
        path: str,
        seq_length: int = 256,
        batch_size: int = 32,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # in checkpoints, for ``predict`` on one's own lines (own.py)
        check_loader_arguments(batch_size, num_workers)
        require(seq_length >= 1, f"data.seq_length must be 1 or more, got {seq_length}.")
        fractions = f"data.val_fraction ({val_fraction}) and test_fraction ({test_fraction})"
        valid = min(val_fraction, test_fraction) > 0 and val_fraction + test_fraction < 1
        require(valid, f"{fractions} must be above 0, their sum below 1.")
        self.path, self.seq_length, self.batch_size = path, seq_length, batch_size
        self.num_workers, self.seed = num_workers, seed
        self.alphabet, text = read_characters(path)
        self.vocab_size = max(len(self.alphabet), 2)  # (the model needs two classes at least)
        ends = [int(len(text) * (1 - val_fraction - test_fraction)), int(len(text) * (1 - test_fraction))]
        self.texts = dict(zip(("train", "val", "test"), torch.tensor_split(text, ends), strict=True))
        short = {split: len(t) for split, t in self.texts.items() if len(t) <= batch_size}
        fix = "use a longer file, larger fractions or a smaller data.batch_size"
        counts = ", ".join(f"{split} {n}" for split, n in short.items())
        require(not short, f"{path}: the characters of {counts} are too few for {batch_size} streams: {fix}.")

    def encode(self, text: str) -> torch.Tensor:
        """Characters of the file's alphabet as token ids."""
        index = {character: i for i, character in enumerate(self.alphabet)}
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.alphabet[i] for i in ids.tolist())

    def streams(self, split: str) -> Streams:
        return Streams(self.texts[split], self.batch_size, self.seq_length)

    def train_dataloader(self) -> DataLoader:
        return make_loader(self, self.streams("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self, self.streams("val"))

    def test_dataloader(self) -> DataLoader:
        return make_loader(self, self.streams("test"))

    def predict_dataloader(self) -> DataLoader:
        return make_loader(self, self.streams("test"))
