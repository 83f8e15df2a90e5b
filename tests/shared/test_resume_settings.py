"""What a resumed run takes from its configuration and what from the checkpoint, never silently."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml

from systems.classifier.train import main
from tests.helpers import QUIET, refused

RUN = [
    "fit",
    *QUIET,
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=1",
    "--test_after_fit=false",
]


def epoch_lrs(folder: str | Path) -> list[float]:
    """The learning rate of each trained epoch, as LearningRateMonitor logged it (config.yaml has one)."""
    with open(Path(folder) / "metrics.csv", newline="") as file:
        return [float(r["lr-AdamW"]) for r in csv.DictReader(file) if r.get("lr-AdamW")]


def last_of(cli: object) -> str:
    return str(Path(cli.trainer.log_dir) / "checkpoints/last.ckpt")


@pytest.mark.parametrize(("first", "then"), [(3, 6), (1, 2)])
def test_extending_a_finished_run_follows_the_schedule_of_the_new_length(
    first: int, then: int, caplog: pytest.LogCaptureFixture
) -> None:
    short = main([*RUN, f"--trainer.max_epochs={first}"])
    extended = main([*RUN, f"--trainer.max_epochs={then}", f"--ckpt_path={last_of(short)}"])
    straight = main([*RUN, f"--trainer.max_epochs={then}"])
    assert epoch_lrs(extended.trainer.log_dir) == pytest.approx(epoch_lrs(straight.trainer.log_dir)[first:])
    assert all(lr > 0 for lr in epoch_lrs(extended.trainer.log_dir))  # main trained on at lr 0 here
    assert f"CosineAnnealingLR T_max {first} -> {then}" in caplog.text


def test_a_plain_resume_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    short = main([*RUN, "--trainer.max_epochs=3"])
    main([*RUN, "--trainer.max_epochs=3", f"--ckpt_path={last_of(short)}"])
    assert "Resuming with this run's settings" not in caplog.text


def test_a_learning_rate_given_with_the_checkpoint_takes_effect_and_is_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    short = main([*RUN, "--trainer.max_epochs=2"])
    resumed = main([*RUN, "--trainer.max_epochs=4", "--model.lr=0.5", f"--ckpt_path={last_of(short)}"])
    assert "model.lr 0.003 -> 0.5" in caplog.text
    # the cosine of a 4-epoch schedule from 0.5, at epochs 2 and 3
    expected = [0.5 * (1 + math.cos(math.pi * epoch / 4)) / 2 for epoch in (2, 3)]
    assert epoch_lrs(resumed.trainer.log_dir) == pytest.approx(expected)
    assert resumed.model.hparams.lr == 0.5
    recorded = yaml.safe_load((Path(resumed.trainer.log_dir) / "config.yaml").read_text())
    assert recorded["model"]["lr"] == 0.5 and recorded["trainer"]["max_epochs"] == 4


def test_a_size_given_with_the_checkpoint_that_the_weights_fix_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    narrow = main([*RUN, "--trainer.max_epochs=1", "--model.width=16"])
    err = refused(capsys, main, ["test", *QUIET, f"--ckpt_path={last_of(narrow)}", "--model.width=32"])
    assert "--model.width=32 does not fit the weights in" in err and "trained with width=16" in err
    assert sorted(p.name for p in Path("lightning_logs/classifier").iterdir()) == ["version_0"]


def test_a_checkpoint_without_explicit_flags_keeps_its_own_sizes() -> None:
    narrow = main([*RUN, "--trainer.max_epochs=1", "--model.width=16"])
    tested = main(["test", *QUIET, f"--ckpt_path={last_of(narrow)}", "--trainer.limit_test_batches=1"])
    assert tested.model.hparams.width == 16


def test_the_schedule_interval_cannot_change_on_resume(capsys: pytest.CaptureFixture[str]) -> None:
    short = main([*RUN, "--trainer.max_epochs=1"])
    err = refused(
        capsys,
        main,
        [*RUN, "--trainer.max_epochs=2", "--model.scheduler_interval=step", f"--ckpt_path={last_of(short)}"],
    )
    assert "Resume with the same scheduler interval" in err


def test_ckpt_path_last_resumes_the_newest_run_and_is_refused_in_a_fresh_folder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "--ckpt_path=last found no checkpoint under lightning_logs/classifier" in refused(
        capsys, main, [*RUN, "--ckpt_path=last"]
    )
    assert not Path("lightning_logs").exists()
    main([*RUN, "--trainer.max_epochs=1"])
    second = main([*RUN, "--trainer.max_epochs=2"])
    resumed = main([*RUN, "--trainer.max_epochs=3", "--ckpt_path=last"])
    assert resumed.trainer.ckpt_path == last_of(second)
    assert resumed.trainer.global_step == 9
