"""Next-character prediction over a text with states carried across batches: one long stream, cut anywhere."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from datamodules.text import MAKE_BOOK, Streams
from shared.errors import UserError
from systems.seq2seq import Seq2Seq
from systems.seq2seq.model import teacher_forced
from systems.seq2seq.sampling import generate
from systems.seq2seq.train import main
from tests.helpers import QUIET, ROOT, assert_same_weights, real_data, refused, send_signal
from tests.systems.seq2seq.test_seq2seq_tbptt import fit, record_chunks

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
BOOK = str(ROOT / "systems" / "seq2seq" / "config_book.yaml")
# a tiny book and a tiny model: seconds per run
TINY = ["--data.init_args.seq_length=16", "--data.init_args.batch_size=4", "--model.hidden_size=16"]
TINY += ["--model.embedding_dim=8", "--model.truncated_bptt_steps=8", "--trainer.limit_train_batches=5"]
TINY += ["--trainer.limit_val_batches=2", "--trainer.max_epochs=2", "--trainer.deterministic=true"]


def write_book(path: Path = Path("book.txt")) -> Path:
    generator = torch.Generator().manual_seed(0)
    words = ["and", "the", "earth", "was", "without", "form", "void", "darkness", "upon", "deep", "light"]
    picks = torch.randint(0, len(words), (900,), generator=generator).tolist()
    path.write_text(" ".join(words[i] for i in picks) + ".\n", encoding="utf-8")
    return path


def text_model(k: int, **overrides: object) -> Seq2Seq:
    torch.manual_seed(0)
    options = {"vocab_size": 12, "hidden_size": 12, "embedding_dim": 6, "truncated_bptt_steps": k}
    return Seq2Seq(**{**options, "carry_across_batches": True, "num_examples": 0, **overrides})


def stream_loader(seq_length: int, streams: int = 3, columns: int = 24) -> DataLoader:
    text = torch.randint(0, 12, (streams * columns + 1,), generator=torch.Generator().manual_seed(1))
    return DataLoader(Streams(text, streams, seq_length), batch_size=streams)


def test_two_batches_of_t_steps_train_as_one_batch_of_2t_with_the_state_carried_across() -> None:
    """The same stream cut into batches of 12 or 24 steps, chunks of 4: the same weights, bit for bit."""
    whole = text_model(4)
    fit(whole, stream_loader(24))
    halves = text_model(4)
    fit(halves, stream_loader(12))
    assert_same_weights(halves, whole)

    reset = text_model(4, carry_across_batches=False)  # 1.x's fresh stream per batch: other weights
    fit(reset, stream_loader(12))
    assert any(not torch.equal(a, b) for a, b in zip(reset.parameters(), whole.parameters(), strict=True))


def test_the_state_enters_each_next_batch_and_is_reset_at_each_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = text_model(6)
    calls = record_chunks(model, monkeypatch)
    fit(model, stream_loader(12), max_epochs=2)  # 2 batches of 2 chunks per epoch
    assert [call["state_in"] is None for call in calls] == [True, False, False, False] * 2
    assert calls[2]["state_in"].encoder[0].equal(calls[1]["state_out"].encoder[0])


def test_validation_streams_the_held_out_text_in_bits_per_character() -> None:
    """``val/bpc`` over batches with the state carried equals one teacher-forced pass over each whole row."""
    model = text_model(5).eval()
    loader = stream_loader(8, columns=20)
    metrics = fit(model, stream_loader(8), limit_train_batches=0).validate(model, loader, verbose=False)[0]
    rows = loader.dataset
    with torch.no_grad():
        logits, _ = teacher_forced(model.encoder, model.decoder, rows.inputs, rows.targets)
    loss = F.cross_entropy(logits.transpose(1, 2), rows.targets)
    assert metrics["val/bpc"] == pytest.approx(float(loss) / math.log(2), rel=1e-5)
    assert metrics["val/loss"] == pytest.approx(float(loss), rel=1e-5)
    assert "val/acc" not in metrics  # the greedy stream means nothing for a text


def test_sampled_text_reads_its_own_samples_as_the_next_inputs() -> None:
    """Nearly greedy (temperature 1e-4): each sampled token is the most likely next token when the prompt and
    the samples are read back as a text, as in training."""
    model = text_model(8).eval()
    prompt = torch.tensor([3, 1, 4, 1, 5])
    written = generate(model.encoder, model.decoder, prompt, 20, torch.Generator().manual_seed(0), 1e-4)
    text = torch.cat([prompt, written]).unsqueeze(0)
    with torch.no_grad():
        logits, _ = teacher_forced(model.encoder, model.decoder, text[:, :-1], text[:, 1:])
    assert torch.equal(logits[0, len(prompt) - 1 :].argmax(dim=-1), written)


def test_carrying_across_batches_is_refused_under_ddp() -> None:
    model = text_model(4)
    model._trainer = SimpleNamespace(world_size=2)
    with pytest.raises(UserError, match="needs one process, not 2"):
        model.on_fit_start()


def test_ctrl_c_mid_epoch_resumes_bit_identically_with_the_carried_state() -> None:
    write_book()
    flags = [
        "fit",
        "--config",
        BOOK,
        *QUIET,
        *TINY,
        "--data.init_args.path=book.txt",
        "--test_after_fit=false",
    ]
    straight = main(flags)
    folder = Path(straight.trainer.log_dir)
    sample = (folder / "val_samples" / "epoch=001.txt").read_text()
    assert sample.startswith("epoch 1") and len(sample) > 600
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0}).Reload()
    assert "val/samples/text_summary" in events.Tags()["tensors"]
    assert "val/bpc" in (folder / "metrics.csv").read_text().splitlines()[0]

    with pytest.raises(SystemExit) as stop:  # after the first chunk's backward of epoch 1's third batch
        main([*flags, send_signal("after_backward", 1, 2)])
    assert stop.value.code == 130
    checkpoint = Path("lightning_logs/seq2seq/version_1/checkpoints/interrupted.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    assert len(saved["stream_state"]) == 5  # both nets' LSTM states and the last token, after batch 2
    resumed = main([*flags, f"--ckpt_path={checkpoint}"])
    assert resumed.trainer.global_step == straight.trainer.global_step
    assert_same_weights(resumed.model, straight.model)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"\xff\xd8\xff\xe0 JFIF", "is not UTF-8 text"), (None, "cannot be read")],
    ids=["empty", "binary", "missing"],
)
def test_a_book_that_is_not_text_is_refused_and_nothing_is_written(
    capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    if content is not None:
        Path("book.bin").write_bytes(content)
    err = refused(capsys, main, ["fit", "--config", BOOK, *QUIET, "--data.init_args.path=book.bin"])
    assert f"book.bin {message}" in err and "--data.init_args.path" in err
    assert not Path("lightning_logs").exists()


@pytest.mark.slow
def test_the_king_james_bible_is_learned_well_above_chance_within_a_small_budget(tmp_path: Path) -> None:
    """200,000 training characters of the installed book: the held-out bits per character fall well below the
    log2(vocabulary) of a uniform guess."""
    bible = real_data("/usr/bin/bible", "apt-get install bible-kjv (the King James Bible and its reader)")
    book = tmp_path / "kjv.txt"
    subprocess.run(["bash", "-c", MAKE_BOOK.replace("bible ", f"{bible} ", 1)], cwd=tmp_path, check=True)
    assert book.stat().st_size > 4_000_000 and shutil.which("cut")
    flags = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=24", "--trainer.limit_val_batches=8"]
    cli = main(
        ["fit", "--config", BOOK, *QUIET, *flags, f"--data.init_args.path={book}", "--test_after_fit=false"]
    )
    uniform = math.log2(cli.datamodule.vocab_size)
    assert float(cli.trainer.callback_metrics["val/bpc"]) < uniform - 2
