"""What validation and test measure of streamed sequences (``StreamMetrics``), and example decodings as text for a
person to read, written at each validation epoch's end (``Decodings``, the callback ``Seq2Seq.configure_callbacks``
adds)."""

from __future__ import annotations

import math
import string
from functools import partial
from typing import Any

import pytorch_lightning as pl
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from shared.visuals import epoch_file, tensorboards, to_trackers

_ALPHABET = string.digits + string.ascii_letters  # one character per token, when the vocabulary allows


class StreamMetrics(nn.ModuleDict):
    """Validation's or test's: the teacher-forced loss per real token (``loss``; ``bpc`` in bits), and of the greedy
    stream the token accuracy (``acc``), the share of sequences right to the end (``exact``) and the accuracy after
    the first chunk, where every target depends on what earlier chunks saw (``acc_past_first_chunk``)."""

    def __init__(self, vocab_size: int) -> None:
        accuracy = partial(MulticlassAccuracy, vocab_size, average="micro")
        metrics = {"loss": MeanMetric(), "bpc": MeanMetric(), "acc": accuracy(), "exact": MeanMetric()}
        super().__init__({**metrics, "acc_past_first_chunk": accuracy()})

    def update_loss(self, loss: Tensor, mask: Tensor) -> None:
        """A chunk's mean loss over its real tokens (``mask``), weighted by their number."""
        self["loss"].update(loss, weight=mask.sum())
        self["bpc"].update(loss / math.log(2), weight=mask.sum())

    def update_stream(self, tokens: Tensor, targets: Tensor, mask: Tensor, chunk_size: int) -> None:
        """The greedy stream's ``tokens`` (B, T) against the ``targets`` at the real steps (``mask``)."""
        k = chunk_size  # the steps of the first chunk
        self["acc"](tokens[mask], targets[mask])
        if mask[:, k:].any():
            self["acc_past_first_chunk"](tokens[:, k:][mask[:, k:]], targets[:, k:][mask[:, k:]])
        self["exact"](((tokens == targets) | ~mask).all(dim=1).float())


def format_decoding(inputs: Tensor, targets: Tensor, tokens: Tensor, vocab_size: int, chunk_size: int) -> str:
    """One sequence as rows of input, target and output tokens, a ``^`` under each wrong output and a ``|``
    over each chunk border, wrapped every 64 steps."""
    width = 1 if vocab_size <= len(_ALPHABET) else len(str(vocab_size - 1)) + 1
    wrong = (tokens != targets).tolist()
    rows = {"chunks": ["|" if t % chunk_size == 0 and t > 0 else " " for t in range(len(inputs))]}
    for name, values in (("input", inputs), ("target", targets), ("output", tokens)):
        rows[name] = [_ALPHABET[v] if width == 1 else str(v) for v in values.tolist()]
    rows["wrong"] = ["^" if w else " " for w in wrong]
    lines = [f"{len(inputs)} steps, {len(wrong) - sum(wrong)} right, {sum(wrong)} wrong"]
    for start in range(0, len(inputs), 64):
        for name, row in rows.items():
            piece = "".join(cell.rjust(width) for cell in row[start : start + 64])  # cells as wide as a token
            lines.append(f"{name:>7} {piece}".rstrip())
    return "\n".join(lines)


class Decodings(pl.Callback):
    """The first ``count`` sequences of each validation as text for a person to read: ``val_decodings/epoch=NNN.txt``,
    a tracker's artifact and TensorBoard's text (Markdown: indented, a code block). ``validation_step`` returns the
    greedy stream's tokens; the first batch's (inputs, targets, lengths, tokens) are kept until the epoch's end, then
    freed. Under DDP the first process writes its own."""

    def __init__(self, count: int) -> None:
        self.count, self.examples = count, []

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if batch_idx == 0 and outputs is not None:
            self.examples = [t[: self.count].cpu() for t in (*batch, outputs)]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        examples, self.examples = self.examples, []
        path = epoch_file(trainer, "val/decodings", ".txt")  # every process: the folder is a broadcast
        if not examples or path is None:
            return
        vocab_size, chunk_size = pl_module.hparams.vocab_size, pl_module.hparams.truncated_bptt_steps
        cut = ((x[:n], y[:n], t[:n]) for x, y, n, t in zip(*examples, strict=True))  # padding cut off
        decodings = "\n\n".join(format_decoding(*example, vocab_size, chunk_size) for example in cut)
        text = f"epoch {trainer.current_epoch}\n\n{decodings}\n"
        path.write_text(text, encoding="utf-8")
        for writer in tensorboards(trainer):
            markdown = "\n".join("    " + line for line in text.splitlines())
            writer.add_text("val/decodings", markdown, trainer.global_step)
        to_trackers(trainer, path, "val/decodings")
