"""What the seq2seq's evaluation measures and writes: each stage's metrics, and example decodings as text for a
person to read (a file in the run's folder, and TensorBoard's text)."""

from __future__ import annotations

import string

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from shared.visuals import epoch_file, tensorboards

# how example decodings show a token when the vocabulary is small enough for one character per token
_ALPHABET = string.digits + string.ascii_letters
_EXAMPLE_WIDTH = 64
Example = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # one sequence's inputs, targets, decoded tokens


def first_examples(
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], tokens: torch.Tensor, count: int
) -> list[Example]:
    """The first ``count`` sequences of a batch ``(inputs, targets, lengths)`` and their decoded ``tokens``,
    padding cut off, on the CPU: what a validation epoch keeps to write out at its end."""
    inputs, targets, lengths = batch
    return [
        (inputs[i, :n].cpu(), targets[i, :n].cpu(), tokens[i, :n].cpu())
        for i, n in enumerate(lengths[:count].tolist())
    ]


def format_decoding(
    inputs: torch.Tensor, targets: torch.Tensor, tokens: torch.Tensor, vocab_size: int, chunk_size: int
) -> str:
    """One sequence as rows of input, target and output tokens, a ``^`` under each wrong output and a
    ``|`` over each chunk border, wrapped every ``_EXAMPLE_WIDTH`` steps."""
    width = 1 if vocab_size <= len(_ALPHABET) else len(str(vocab_size - 1)) + 1

    def cells(values: torch.Tensor) -> list[str]:
        if width == 1:
            return [_ALPHABET[v] for v in values.tolist()]
        return [str(v).rjust(width) for v in values.tolist()]

    wrong = (tokens != targets).tolist()
    rows = {
        "chunks": ["|" if t % chunk_size == 0 and t > 0 else " " for t in range(len(inputs))],
        "input": cells(inputs),
        "target": cells(targets),
        "output": cells(tokens),
        "wrong": ["^" if w else " " for w in wrong],
    }
    lines = [f"{len(inputs)} steps, {len(wrong) - sum(wrong)} right, {sum(wrong)} wrong"]
    for start in range(0, len(inputs), _EXAMPLE_WIDTH):
        for name, row in rows.items():
            piece = row[start : start + _EXAMPLE_WIDTH]
            if width > 1 and name in ("chunks", "wrong"):
                piece = [cell.rjust(width) for cell in piece]
            lines.append(f"{name:>7} {''.join(piece)}".rstrip())
    return "\n".join(lines)


def format_decodings(examples: list[Example], vocab_size: int, chunk_size: int) -> str:
    """Each example's ``(inputs, targets, tokens)`` formatted in turn: one validation epoch's text."""
    return "\n\n".join(format_decoding(*example, vocab_size, chunk_size) for example in examples)


def write_decodings(trainer: pl.Trainer, examples: list[Example], vocab_size: int, chunk_size: int) -> None:
    """The examples as ``val_decodings/epoch=NNN.txt`` and TensorBoard's text (Markdown: indented, a code block).
    Every process calls it (the file's folder is a broadcast under DDP); the first writes its own examples."""
    if (path := epoch_file(trainer, "val/decodings", ".txt")) is not None:
        text = f"epoch {trainer.current_epoch}\n\n{format_decodings(examples, vocab_size, chunk_size)}\n"
        path.write_text(text, encoding="utf-8")
        for writer in tensorboards(trainer):
            writer.add_text(
                "val/decodings", "\n".join("    " + line for line in text.splitlines()), trainer.global_step
            )


def stage_metrics(vocab_size: int, streamed: bool) -> nn.ModuleDict:
    """One stage's metrics, logged as ``stage/name``: the loss per token and the token accuracy; for the greedy
    stream (validation, test) also the accuracy past the first chunk and the share of sequences without an error."""
    # the training accuracy skips its argument checks, which would sync the GPU with the host at every batch
    metrics = {
        "loss": MeanMetric(),
        "acc": MulticlassAccuracy(vocab_size, average="micro", validate_args=streamed),
    }
    if streamed:
        metrics["acc_past_first_chunk"] = MulticlassAccuracy(vocab_size, average="micro")
        metrics["exact"] = MeanMetric()
    return nn.ModuleDict(metrics)
