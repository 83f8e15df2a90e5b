"""Every way a run stops leaves a state that resumes exactly, and an unfinished run exits non-zero."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from systems.classifier.train import main
from tests.helpers import (
    QUIET,
    ROOT,
    assert_same_weights,
    ctrl_c_after_first_epoch,
    logged_steps,
    refused,
    send_signal,
)

RUN = [
    "fit",
    *QUIET,
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=5",
    "--trainer.limit_val_batches=2",
    "--trainer.deterministic=true",
    "--test_after_fit=false",
]
FOLDER = Path("lightning_logs/classifier")


def interrupted(*flags: str) -> tuple[int, Path]:
    """Run with ``flags`` until a signal stops it; its exit status and the checkpoint it left."""
    with pytest.raises(SystemExit) as stop:
        main([*RUN, *flags])
    return stop.value.code, max(
        FOLDER.glob("version_*/checkpoints/interrupted.ckpt"), key=lambda p: p.stat().st_mtime
    )


@pytest.mark.parametrize(
    ("hook", "epoch", "batch", "flags", "saved_step"),
    [
        # between a backward and its optimizer step: the batch is finished first
        ("after_backward", 1, 2, [], 8),
        # during a validation in the middle of an epoch: the validation is finished first
        ("val_batch_start", 1, 0, ["--trainer.val_check_interval=2"], 7),
        # at an epoch's last batch: the stop comes between epochs, where last.ckpt holds the state
        ("train_batch_end", 0, 4, [], 5),
    ],
)
def test_ctrl_c_anywhere_in_fit_saves_a_state_that_resumes_bit_identically(
    hook: str, epoch: int, batch: int, flags: list[str], saved_step: int, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = main([*RUN, *flags])
    status, checkpoint = interrupted(*flags, send_signal(hook, epoch, batch))
    assert status == 130
    assert f"Stopped by Ctrl-C: the state is saved in {checkpoint}" in capsys.readouterr().err
    assert torch.load(checkpoint, weights_only=True)["global_step"] == saved_step
    resumed = main([*RUN, *flags, f"--ckpt_path={checkpoint}"])
    assert resumed.trainer.global_step == straight.trainer.global_step == 10
    assert_same_weights(resumed.model, straight.model)
    # the resumed run goes on in the stopped one's folder, its validations at the steps of the uninterrupted one
    assert Path(resumed.trainer.log_dir) == checkpoint.parent.parent
    assert logged_steps(resumed.trainer.log_dir) == logged_steps(straight.trainer.log_dir)


@pytest.mark.slow
def test_ctrl_c_with_augmentation_and_loader_workers_resumes_bit_identically() -> None:
    """The augmentation's draws are part of the saved state, and loader workers change nothing."""
    flags = ["--data.augment=true", "--data.num_workers=2"]
    straight = main([*RUN, *flags])
    _, checkpoint = interrupted(*flags, send_signal("after_backward", 1, 2))
    resumed = main([*RUN, *flags, f"--ckpt_path={checkpoint}"])
    assert_same_weights(resumed.model, straight.model)
    plain = main(RUN)  # the control: augmentation did change what was trained
    assert not torch.equal(plain.model.net.head[1].weight, straight.model.net.head[1].weight)


def test_a_stop_after_the_last_batch_lets_fit_finish_but_exits_130(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*RUN, "--test_after_fit=true", send_signal("val_batch_start", 1, 0)])
    assert stop.value.code == 130
    last = FOLDER / "version_0/checkpoints/last.ckpt"
    assert f"the state is saved in {last}" in capsys.readouterr().err
    assert torch.load(last, weights_only=True)["global_step"] == 10


def test_sigterm_exits_143_with_a_checkpoint_that_resumes() -> None:
    straight = main(RUN)
    status, checkpoint = interrupted(send_signal("after_backward", 1, 3, signal.SIGTERM))
    assert status == 143
    resumed = main([*RUN, f"--ckpt_path={checkpoint}"])
    assert_same_weights(resumed.model, straight.model)


def test_a_second_ctrl_c_stops_at_once_and_saves_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*RUN, send_signal("after_backward", 1, 1, times=2)])
    assert stop.value.code == 130
    assert "nothing was saved" in capsys.readouterr().err
    checkpoints = {p.name for p in FOLDER.glob("version_0/checkpoints/*")}
    assert "interrupted.ckpt" not in checkpoints and "last.ckpt" in checkpoints  # epoch 0's


def test_the_interruption_checkpoint_goes_beside_last_ckpt_with_any_logger() -> None:
    with pytest.raises(SystemExit) as stop:
        main(
            [
                *RUN,
                "--trainer.logger=pytorch_lightning.loggers.CSVLogger",
                "--trainer.logger.init_args.save_dir=csv_logs",
                send_signal("after_backward", 1, 1),
            ]
        )
    assert stop.value.code == 130
    folder = Path("csv_logs/lightning_logs/version_0/checkpoints")
    assert {"last.ckpt", "interrupted.ckpt"} <= {p.name for p in folder.iterdir()}


class _Crashing(Exception):
    pass


def test_an_exception_saves_nothing_and_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing step leaves its state half-made, so no checkpoint is written of it; last.ckpt remains."""
    from systems.classifier import Classifier

    original = Classifier.training_step

    def failing(self: Classifier, batch: object, batch_idx: int) -> object:
        if self.current_epoch == 1 and batch_idx == 2:
            raise _Crashing("the data centre lost power")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", failing)
    with pytest.raises(_Crashing):
        main(RUN)
    names = {p.name for p in FOLDER.glob("version_0/checkpoints/*.ckpt")}
    assert "last.ckpt" in names and not {"interrupted.ckpt", "on_exception.ckpt"} & names


@pytest.mark.slow
def test_ctrl_c_through_the_real_command_line(tmp_path: Path) -> None:
    """A real SIGINT: the message, the checkpoint, exit status 130."""
    flags = [*RUN[:1], *QUIET, "--trainer.max_epochs=100", "--test_after_fit=false", "--model.lr=1e-4"]
    status, err = ctrl_c_after_first_epoch("systems.classifier.train", *flags, cwd=tmp_path)
    assert status == 130, err[-2000:]
    assert "Traceback" not in err
    assert "Ctrl-C: stopping after this batch" in err
    assert (tmp_path / "lightning_logs/classifier/version_0/checkpoints/interrupted.ckpt").is_file()


def test_a_resumed_run_can_be_stopped_again_in_the_epoch_it_resumed() -> None:
    """A run resumed mid-epoch gets no on_train_epoch_start for that epoch; the stop must work there too."""
    straight = main(RUN)
    _, first = interrupted(send_signal("after_backward", 1, 0))
    _, second = interrupted(f"--ckpt_path={first}", send_signal("after_backward", 1, 2))
    assert torch.load(second, weights_only=True)["global_step"] == 8
    resumed = main([*RUN, f"--ckpt_path={second}"])
    assert_same_weights(resumed.model, straight.model)


def test_the_resume_pieces_work_in_a_plain_trainer(tmp_path: Path) -> None:
    """Without SystemCLI: the callbacks and the checkpoint writer that the README's "Copying a system"
    names, in a Trainer of one's own, resume a Ctrl-C'd run exactly."""
    import pytorch_lightning as pl

    from datamodules import DigitsDataModule
    from shared.checkpoints import WholeFileCheckpointIO
    from shared.errors import Interrupted
    from shared.resume import GracefulStop, LastCheckpoint, RandomState
    from systems.classifier import Classifier
    from tests.helpers import SendSignal

    def fit(folder: str, *callbacks: pl.Callback, ckpt_path: str | None = None) -> Classifier:
        pl.seed_everything(0)
        model = Classifier()
        trainer = pl.Trainer(
            default_root_dir=tmp_path / folder,
            max_epochs=2,
            limit_train_batches=5,
            limit_val_batches=2,
            deterministic=True,
            logger=False,
            enable_progress_bar=False,
            plugins=[WholeFileCheckpointIO()],
            callbacks=[RandomState(), LastCheckpoint(), GracefulStop(), *callbacks],
        )
        trainer.fit(model, datamodule=DigitsDataModule(), ckpt_path=ckpt_path)
        return model

    straight = fit("straight")
    with pytest.raises(Interrupted) as stop:
        fit("stopped", SendSignal("after_backward", 1, 2))
    assert stop.value.saved and Path(stop.value.saved).is_file()
    assert_same_weights(fit("resumed", ckpt_path=stop.value.saved), straight)


def rows(folder: str | Path) -> list[dict[str, str]]:
    with open(Path(folder) / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def scalars(folder: str | Path, tag: str) -> list[tuple[int, float]]:
    """What TensorBoard shows of a scalar: its events of every file in the folder, later runs' purges applied."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_a_resume_continues_its_run_folder_with_the_metrics_of_a_run_that_never_stopped() -> None:
    """Resumed from version_1's interrupted.ckpt, the run goes on in version_1: metrics.csv holds each row of the run
    that never stopped once, at its step; so do TensorBoard's scalars. config.yaml stays the first part's."""
    every_step = [*RUN, "--trainer.log_every_n_steps=1"]
    straight = main(every_step)
    _, checkpoint = interrupted("--trainer.log_every_n_steps=1", send_signal("train_batch_end", 1, 1))
    resumed = main([*every_step, f"--ckpt_path={checkpoint}", "--model.lr=0.001"])
    folder = Path(resumed.trainer.log_dir)
    assert folder == FOLDER / "version_1" and sorted(p.name for p in FOLDER.iterdir()) == [
        "version_0",
        "version_1",
    ]
    assert "lr: 0.001" in (folder / "config-resumed-at-step-7.yaml").read_text()
    assert "lr: 0.003" in (folder / "config.yaml").read_text()
    expected, got = rows(straight.trainer.log_dir), rows(folder)
    assert [(r["epoch"], r["step"], sorted(k for k, v in r.items() if v)) for r in got] == [
        (r["epoch"], r["step"], sorted(k for k, v in r.items() if v)) for r in expected
    ]
    # the rows before the stop are the first part's; after it, the resumed part's, trained at another lr
    assert [r for r in got if int(r["step"]) < 7] == [r for r in expected if int(r["step"]) < 7]
    loss = {int(r["step"]): r["train/loss_step"] for r in got if r["train/loss_step"]}
    assert loss[8] != {int(r["step"]): r["train/loss_step"] for r in expected if r["train/loss_step"]}[8]
    loss = scalars(folder, "train/loss_step")
    assert [step for step, _ in loss] == [
        step for step, _ in scalars(straight.trainer.log_dir, "train/loss_step")
    ]


def test_a_second_resume_from_the_same_checkpoint_continues_the_folder_again() -> None:
    """Resumed twice from one interrupted.ckpt (the first resume judged wrong, here its learning rate): the second
    replaces the first's continuation, its configuration beside the first's, and ends as the uninterrupted run."""
    straight = main(RUN)
    _, checkpoint = interrupted(send_signal("train_batch_end", 1, 1))
    main([*RUN, f"--ckpt_path={checkpoint}", "--model.lr=0.5"])
    resumed = main([*RUN, f"--ckpt_path={checkpoint}"])
    assert_same_weights(resumed.model, straight.model)
    folder = checkpoint.parent.parent
    assert sorted(p.name for p in folder.glob("config-resumed-*")) == [
        "config-resumed-at-step-7-2.yaml",
        "config-resumed-at-step-7.yaml",
    ]
    assert logged_steps(folder) == logged_steps(straight.trainer.log_dir)


def test_a_resume_writes_into_a_new_run_folder_when_asked() -> None:
    _, checkpoint = interrupted(send_signal("train_batch_end", 1, 1))
    resumed = main([*RUN, f"--ckpt_path={checkpoint}", "--new_run_folder=true"])
    assert Path(resumed.trainer.log_dir) == FOLDER / "version_1" != checkpoint.parent.parent
    assert not list(checkpoint.parent.parent.glob("config-resumed-*"))


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        ("--data.batch_size=16", "batch_size=64 (this run: 16)"),
        ("--data.seed=7", "seed=42 (this run: 7)"),
        ("--data.shuffle=false", "shuffle=True (this run: False)"),
        ("--data.val_fraction=0.3", "1258 training samples (this run: 899)"),
    ],
)
def test_a_mid_epoch_resume_with_other_batches_is_refused_and_leaves_the_run_folder_as_it_was(
    flag: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loader would skip the batches served, but they would hold other samples: some trained twice, some never."""
    _, checkpoint = interrupted(send_signal("train_batch_end", 1, 1))
    folder = checkpoint.parent.parent
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    err = refused(capsys, main, [*RUN, f"--ckpt_path={checkpoint}", flag])
    assert f"The checkpoint stopped 2 batches into epoch 1 with {named}: resume with its data set" in err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_an_epoch_end_checkpoint_resumes_with_another_batch_size() -> None:
    """Nothing of the next epoch was served: a new batch size (and seed, shuffle, split) takes effect."""
    main(RUN)
    last = FOLDER / "version_0/checkpoints/last.ckpt"
    resumed = main([*RUN, "--trainer.max_epochs=3", f"--ckpt_path={last}", "--data.batch_size=16"])
    assert resumed.trainer.global_step == 15 and resumed.datamodule.batch_size == 16


@pytest.mark.slow
def test_a_lost_ddp_process_stops_the_other_in_seconds_with_one_sentence(tmp_path: Path) -> None:
    """kill -9 one of two DDP processes mid-run: the other does not wait for the collective's 30-minute timeout but
    exits non-zero with one sentence, and last.ckpt resumes."""
    ddp = [
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--test_after_fit=false",
    ]
    command = [sys.executable, "-m", "systems.classifier.train", "fit", *QUIET, *ddp]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [*command, "--trainer.max_epochs=200"], cwd=tmp_path, env=env, stderr=subprocess.PIPE
    )
    last = tmp_path / "lightning_logs/classifier/version_0/checkpoints/last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    children = subprocess.run(
        ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    assert children, "rank 1 was not found"
    os.kill(int(children[0]), signal.SIGKILL)
    killed = time.monotonic()
    err = process.communicate(timeout=120)[1].decode()
    assert process.returncode == 1 and time.monotonic() - killed < 60
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "error: another process of this run was lost (killed, or its machine): resume with "
        "`fit --ckpt_path=last` and the same flags."
    )
    epoch = torch.load(last, weights_only=True)["epoch"]
    resumed = subprocess.run(
        [*command, f"--trainer.max_epochs={epoch + 2}", "--ckpt_path=last"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=True)["epoch"] == epoch + 1
