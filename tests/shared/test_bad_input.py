"""Every mistake a user can make: one short message naming the fix, exit status 2, and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.datasets import MNIST

from systems.classifier.train import main as classifier
from systems.gan.train import main as gan
from systems.seq2seq.train import main as seq2seq
from tests.datamodules.test_mnist import fake_mnist
from tests.helpers import QUIET, ROOT, refused

SHORT = [*QUIET, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
MNIST_FLAGS = ["--data=datamodules.MNISTDataModule", "--data.data_dir=data", "--data.batch_size=16"]


def nothing_written() -> bool:
    return not Path("lightning_logs").exists() and not Path("data/MNIST").exists()


@pytest.mark.parametrize(
    ("run", "flags", "message"),
    [
        (classifier, ["--model.width=0"], "model.width must be 1 or more, got 0"),
        (classifier, ["--trainer.max_epochs=0"], "--trainer.max_epochs=0 trains nothing"),
        (classifier, ["--trainer.max_epochs=-3"], "--trainer.max_epochs=-3 trains nothing"),
        (classifier, ["--trainer.max_epochs=-1"], "sized by max_epochs, which is -1"),
        (classifier, ["--data.init_args.batch_size=0"], "data.batch_size must be 1 or more, got 0"),
        (classifier, ["--data.init_args.val_fraction=1.2"], "data.val_fraction (1.2)"),
        (classifier, ["--data.init_args.num_workers=-1"], "data.num_workers must be 0"),
        (classifier, ["--optimizer=Adam"], "unrecognized arguments: --optimizer=Adam"),
        (classifier, ["--lr_scheduler=StepLR"], "unrecognized arguments: --lr_scheduler=StepLR"),
        (seq2seq, ["--model.vocab_size=1"], 'Linked "model.vocab_size" must be given via "data.vocab_size"'),
        (seq2seq, ["--data.vocab_size=1"], "data.vocab_size must be 2 or more, got 1"),
        (gan, ["--model.n_critic=0"], "model.n_critic and model.n_generator must be 1 or more"),
        (gan, ["--model.generator_blocks=-1"], "generator_blocks 0 or more"),
        (gan, ["--model.ema_decay=1"], "ema_decay in [0, 1)"),
        (
            classifier,
            ["--trainer.accumulate_grad_batches=0"],
            "--trainer.accumulate_grad_batches=0 would never step",
        ),
        (classifier, ["--trainer.gradient_clip_val=-1"], "--trainer.gradient_clip_val=-1 is negative"),
        (classifier, ["--seed_everything=-5"], "--seed_everything=-5 is outside 0 to 4294967295"),
        (classifier, ["--seed_everything=4294967296"], "--seed_everything=4294967296 is outside"),
        (classifier, ["--ckpt_path="], "--ckpt_path is empty (an unset shell variable?)"),
    ],
)
def test_a_bad_value_is_one_sentence_with_nothing_written(
    run: object, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(capsys, run, ["fit", *SHORT, *flags])
    assert message in err
    assert len(err.strip().splitlines()) <= 3
    assert nothing_written()


@pytest.mark.parametrize(
    ("run", "flags", "message"),
    [
        (classifier, ["--model.normalization=batch"], 'Parser key "model.normalization"'),
        (classifier, ["--data.init_args.half=third"], "half"),
        (classifier, [*MNIST_FLAGS, "--data.dataset=kmnist"], "kmnist"),
        (seq2seq, ["--data.task=sort"], "sort"),
        (gan, ["--model.loss=hinge"], 'Parser key "model.loss"'),
    ],
)
def test_a_choice_outside_its_type_is_refused_by_the_parser(
    run: object, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refused(capsys, run, ["fit", *SHORT, *flags])
    assert nothing_written()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_asked_for_where_there_is_none(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, classifier, ["fit", *SHORT, "--trainer.accelerator=gpu"])
    assert "torch sees no GPU here: use --trainer.accelerator=auto or cpu." in err
    assert nothing_written()


def test_a_folder_where_nothing_can_be_written(capsys: pytest.CaptureFixture[str]) -> None:
    Path("lightning_logs").write_text("a file where the runs' folder would go")
    err = refused(capsys, classifier, ["fit", *SHORT])
    assert "The run's folder cannot be made in lightning_logs/classifier" in err
    assert "--trainer.default_root_dir" in err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "is truncated or damaged"),
        ("small", "data.val_size=5000 leaves none of the 60 training images"),
    ],
)
def test_bad_mnist_files_stop_the_run_before_its_folder_is_kept(
    damage: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_mnist(Path("data"))
    raw = Path("data/MNIST/raw/t10k-images-idx3-ubyte")
    if damage == "truncate":
        raw.write_bytes(raw.read_bytes()[:-100])
    flags = ["--data.val_size=10"] if damage == "truncate" else []
    err = refused(capsys, classifier, ["fit", *SHORT, *MNIST_FLAGS, "--data.download=false", *flags])
    assert message in err
    assert not Path("lightning_logs").exists()


def test_mnist_offline_with_no_files(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(MNIST, "mirrors", ["http://10.255.255.1/mnist/"])
    err = refused(capsys, classifier, ["fit", *SHORT, *MNIST_FLAGS, "--data.download_timeout=1"])
    assert "could not be downloaded (no network?" in err and "Put the four idx files there" in err
    assert nothing_written() and not Path("data").exists()


def test_the_gan_without_a_judge_monitors_nothing_and_keeps_last_ckpt() -> None:
    cli = gan(["fit", *SHORT, "--trainer.check_val_every_n_epoch=1", "--model.judge=false"])
    names = {p.name for p in (Path(cli.trainer.log_dir) / "checkpoints").iterdir()}
    assert names == {"last.ckpt"}


def test_a_misspelt_monitor_is_refused_at_the_first_validation(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, classifier, ["fit", *SHORT, "--checkpoint.monitor=val/accuracy"])
    assert (
        "ModelCheckpoint(monitor='val/accuracy')` could not find the monitored key" in err
        and "'val/acc'" in err
    )
    assert not Path("lightning_logs").exists()


@pytest.mark.slow
def test_on_the_real_command_line_a_mistake_is_one_line_and_a_traceback_is_on_request(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "systems.classifier.train", "fit", "--model.width=0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines()[-1] == "error: model.width must be 1 or more, got 0."
    assert "Traceback" not in plain.stderr
    assert not (tmp_path / "lightning_logs").exists()
    shown = subprocess.run(
        command,
        cwd=tmp_path,
        env={**env, "SYSTEMS_TRACEBACK": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 1 and "Traceback" in shown.stderr and "UserError" in shown.stderr
