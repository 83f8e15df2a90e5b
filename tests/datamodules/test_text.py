"""A text file as contiguous character streams: each batch continues the one before, targets are the next
characters, and a file that is not text is refused in one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules import TextDataModule
from shared.errors import UserError

TEXT = "In the beginning God created the heaven and the earth. Und die Erde war wüst und leer. " * 7


def small(path: Path, **overrides: object) -> TextDataModule:
    path.write_text(TEXT, encoding="utf-8")
    return TextDataModule(str(path), **{"seq_length": 7, "batch_size": 3, **overrides})


def test_the_vocabulary_is_the_files_characters_and_round_trips(tmp_path: Path) -> None:
    data = small(tmp_path / "book.txt")
    assert data.alphabet == "".join(sorted(set(TEXT))) and data.vocab_size == len(set(TEXT))
    whole = torch.cat(list(data.texts.values()))
    assert data.decode(whole) == TEXT  # the splits cut the text, in order, losing nothing
    assert torch.equal(data.encode("wüst"), whole[TEXT.index("wüst") :][:4])


def test_each_batch_continues_the_one_before_in_every_row(tmp_path: Path) -> None:
    data = small(tmp_path / "book.txt")
    for split in ("train", "val", "test"):
        loader = getattr(data, f"{split}_dataloader")()
        batches = list(loader)
        assert all(x.shape[0] == data.batch_size for x, _, _ in batches)
        assert [int(n[0]) for _, _, n in batches][:-1] == [data.seq_length] * (len(batches) - 1)
        rows = torch.cat([x for x, _, _ in batches], dim=1)  # (streams, all steps): row by row, the split
        text, columns = data.texts[split], rows.shape[1]
        assert columns == (len(text) - 1) // data.batch_size
        assert torch.equal(rows.flatten(), text[: data.batch_size * columns])


def test_the_targets_are_the_next_characters(tmp_path: Path) -> None:
    data = small(tmp_path / "book.txt")
    text = data.texts["train"]
    streams = data.streams("train")
    for index in range(len(streams)):
        inputs, targets, length = streams[index]
        row, window = index % data.batch_size, index // data.batch_size
        start = row * streams.inputs.shape[1] + window * data.seq_length
        assert len(inputs) == int(length)
        assert torch.equal(inputs, text[start : start + len(inputs)])
        assert torch.equal(targets, text[start + 1 : start + 1 + len(inputs)])


def test_the_training_loader_is_never_shuffled_and_resumes(tmp_path: Path) -> None:
    loader = small(tmp_path / "book.txt").train_dataloader()
    loader.sampler.set_epoch(3)
    first = [x for x, _, _ in loader]
    loader.load_state_dict({**loader.state_dict(), "epoch": 3, "batches": 2})
    resumed = [x for x, _, _ in loader]
    assert len(first) > 3 and all(torch.equal(a, b) for a, b in zip(first[2:], resumed, strict=True))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not UTF-8 text"),
        (b"text\x00with a NUL", "looks binary"),
        (None, "cannot be read (No such file or directory)"),
        ("folder", "cannot be read (Is a directory)"),
        (b"too short", "too few for 3 streams"),
    ],
    ids=["empty", "binary", "nul", "missing", "folder", "short"],
)
def test_a_file_that_is_not_text_is_refused_with_the_fix(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "book.txt"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as refused:
        TextDataModule(str(path), batch_size=3)
    text = str(refused.value)
    assert message in text and str(path) in text
    assert "--data.init_args.path" in text or "batch_size" in text
    assert text.count(". ") == 0  # one sentence
