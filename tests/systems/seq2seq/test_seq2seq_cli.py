"""The seq2seq system through its command line: runs, logs, checkpoints, resumes, predicts, copies, DDP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from systems.seq2seq import Seq2Seq
from systems.seq2seq.evaluation import Decodings
from systems.seq2seq.train import main
from tests.helpers import QUIET, assert_same_weights, refused, run_module, send_signal

# a few short sequences and a small model: seconds per run
TINY = [
    "--data.init_args.train_size=48",
    "--data.init_args.val_size=12",
    "--data.init_args.test_size=12",
    "--data.init_args.min_length=20",
    "--data.init_args.max_length=45",
    "--data.init_args.batch_size=12",
    "--model.hidden_size=16",
    "--model.embedding_dim=8",
    "--model.truncated_bptt_steps=8",
]


def fit_tiny(*flags: str):
    return main(["fit", *QUIET, *TINY, "--trainer.max_epochs=1", *flags])


@pytest.mark.slow
def test_fast_dev_run_through_the_real_command_line(tmp_path: Path) -> None:
    result = run_module("systems.seq2seq.train", "fit", "--trainer.fast_dev_run=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc" in result.stdout


def test_fit_counts_one_step_per_chunk_and_logs_metrics_and_decodings() -> None:
    cli = fit_tiny("--test_after_fit=false")
    k = cli.model.hparams.truncated_bptt_steps
    loader = cli.datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    assert cli.trainer.global_step == sum(math.ceil(inputs.shape[1] / k) for inputs, _, _ in loader)

    folder = Path(cli.trainer.log_dir)
    header = (folder / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in (
        "train/loss_epoch",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_past_first_chunk",
        "val/exact",
    ):
        assert name in header
    text = (folder / "val_decodings" / "epoch=000.txt").read_text()
    assert text.count("  input ") >= cli.model.hparams.num_examples
    assert " target " in text and " output " in text and "steps," in text
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0}).Reload()
    assert "val/decodings/text_summary" in events.Tags()["tensors"]
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    decodings = next(c for c in cli.trainer.callbacks if isinstance(c, Decodings))  # the module's own
    assert decodings.examples == []  # kept for the epoch's end, freed there
    assert cli.model.lr_schedulers().last_epoch == 1  # stepped by hand, once per epoch


def test_checkpoint_round_trip_with_an_overridden_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    cli = fit_tiny("--test_after_fit=false")
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    inputs, _, _ = next(iter(cli.datamodule.val_dataloader()))
    trained = cli.model.eval()
    loaded = Seq2Seq.load_from_checkpoint(path).eval()
    with torch.no_grad():
        expected_tokens, expected_logits = trained.stream(inputs)
        tokens, logits = loaded.stream(inputs)
    assert torch.equal(tokens, expected_tokens)
    torch.testing.assert_close(logits, expected_logits)

    rechunked = Seq2Seq.load_from_checkpoint(path, truncated_bptt_steps=5).eval()
    assert rechunked.hparams.truncated_bptt_steps == 5
    calls = []
    original = rechunked.forward
    monkeypatch.setattr(rechunked, "forward", lambda *args: calls.append(1) or original(*args))
    with torch.no_grad():
        rechunked_tokens, _ = rechunked.stream(inputs)
    assert len(calls) == math.ceil(inputs.shape[1] / 5)
    # carried state: the stream does not depend on where it is cut
    assert torch.equal(rechunked_tokens, expected_tokens)

    with pytest.raises(RuntimeError, match="size mismatch"):  # Lightning's own strict load
        Seq2Seq.load_from_checkpoint(path, hidden_size=32)


class _StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


def test_resume_from_last_checkpoint_gives_the_weights_of_an_uninterrupted_run() -> None:
    flags = [
        *QUIET,
        *TINY,
        "--trainer.max_epochs=3",
        "--trainer.deterministic=true",
        "--test_after_fit=false",
    ]
    uninterrupted = main(["fit", *flags])

    stopped = main(flags, run=False)  # the same run, stopped after its first epoch
    stopped.trainer.callbacks.append(_StopAfterFirstEpoch())
    stopped.trainer.fit(stopped.model, datamodule=stopped.datamodule)
    assert stopped.trainer.current_epoch == 1
    last = Path(stopped.trainer.log_dir) / "checkpoints" / "last.ckpt"
    resumed = main(["fit", *flags, f"--ckpt_path={last}"])

    assert resumed.trainer.global_step == uninterrupted.trainer.global_step
    expected = uninterrupted.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0)
    lr = [group["lr"] for group in resumed.model.optimizers().optimizer.param_groups]
    assert lr == [group["lr"] for group in uninterrupted.model.optimizers().optimizer.param_groups]


def test_predict_streams_each_whole_sequence() -> None:
    cli = fit_tiny("--test_after_fit=false")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    predicted = main(["predict", *QUIET, *TINY, f"--ckpt_path={last}"])
    saved = torch.load(Path(predicted.trainer.log_dir) / "predictions.pt", weights_only=True)
    sequences = [tokens for batch in saved["predictions"] for tokens in batch]
    inputs, _, lengths = cli.datamodule.datasets["test"].tensors
    assert [len(tokens) for tokens in sequences] == lengths.tolist()
    model = predicted.model.eval()
    with torch.no_grad():
        whole, _, _ = model(inputs[:, : int(lengths.max())])
    for row, (tokens, n) in enumerate(zip(sequences, lengths.tolist(), strict=True)):
        assert torch.equal(tokens, whole[row, :n])


def test_a_wrong_config_value_is_refused_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert "truncated_bptt_steps" in refused(capsys, main, ["fit", *QUIET, "--model.truncated_bptt_steps=0"])
    assert "data.delay" in refused(capsys, main, ["fit", *QUIET, "--data.init_args.delay=500"])


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path: Path) -> None:
    """Batches of two sequences of 8 to 64 steps: the two processes get batches of other chunk counts, and
    the module pads them to a common one; without that, one process's gradient all-reduce waits forever
    for the other (this run then hangs until the timeout)."""
    result = run_module(
        "systems.seq2seq.train",
        "fit",
        *QUIET,
        *TINY,
        "--data.init_args.train_size=16",
        "--data.init_args.val_size=4",
        "--data.init_args.test_size=4",
        "--data.init_args.min_length=8",
        "--data.init_args.max_length=64",
        "--data.init_args.batch_size=2",
        "--trainer.max_epochs=1",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc" in result.stdout
    folder = tmp_path / "lightning_logs" / "seq2seq" / "version_0"
    checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # 4 batches per process, each of 1 to 8 chunks of 8 steps, and more than one chunk in all
    assert 4 < checkpoint["global_step"] <= 4 * 8
    assert (folder / "val_decodings" / "epoch=000.txt").is_file()


def test_ctrl_c_in_a_later_epoch_between_two_chunks_resumes_bit_identically() -> None:
    flags = [
        "fit",
        *QUIET,
        *TINY,
        "--trainer.max_epochs=2",
        "--trainer.deterministic=true",
        "--test_after_fit=false",
    ]
    straight = main(flags)
    with pytest.raises(SystemExit) as stop:  # after the first chunk's backward of epoch 1's third batch
        main([*flags, send_signal("after_backward", 1, 2)])
    assert stop.value.code == 130
    checkpoint = Path("lightning_logs/seq2seq/version_1/checkpoints/interrupted.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    assert (
        saved["epoch"] == 1
        and saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 3
    )
    resumed = main([*flags, f"--ckpt_path={checkpoint}"])
    assert resumed.trainer.global_step == straight.trainer.global_step
    assert_same_weights(resumed.model, straight.model)
