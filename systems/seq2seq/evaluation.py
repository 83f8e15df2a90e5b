"""Example decodings as text for a person to read, written at each validation epoch's end: a file in the run's
folder, and TensorBoard's text."""

from __future__ import annotations

import string

import pytorch_lightning as pl
from torch import Tensor

from shared.visuals import epoch_file, tensorboards, to_trackers

_ALPHABET = string.digits + string.ascii_letters  # one character per token, when the vocabulary allows


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


def write_decodings(trainer: pl.Trainer, examples: list[Tensor], vocab_size: int, chunk_size: int) -> None:
    """The ``examples`` (inputs, targets, lengths, decoded tokens of a few sequences; padding cut off here) as
    ``val_decodings/epoch=NNN.txt``, a tracker's artifact and TensorBoard's text (Markdown: indented, a code block).
    Every process calls it (the file's folder is a broadcast under DDP); the first writes its own examples."""
    if (path := epoch_file(trainer, "val/decodings", ".txt")) is not None:
        cut = ((x[:n], y[:n], t[:n]) for x, y, n, t in zip(*examples, strict=True))
        decodings = "\n\n".join(format_decoding(*example, vocab_size, chunk_size) for example in cut)
        text = f"epoch {trainer.current_epoch}\n\n{decodings}\n"
        path.write_text(text, encoding="utf-8")
        for writer in tensorboards(trainer):
            markdown = "\n".join("    " + line for line in text.splitlines())
            writer.add_text("val/decodings", markdown, trainer.global_step)
        to_trackers(trainer, path, "val/decodings")
