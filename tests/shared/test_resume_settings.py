"""A resumed run is built from its configuration; the checkpoint gives the weights and the progress. What
differs from the checkpoint is said, and what the weights cannot take is refused."""

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


@pytest.mark.parametrize(("first", "then"), [pytest.param(3, 6, marks=pytest.mark.slow), (1, 2)])
def test_extending_a_finished_run_follows_the_schedule_of_the_new_length(
    first: int, then: int, caplog: pytest.LogCaptureFixture
) -> None:
    short = main([*RUN, f"--trainer.max_epochs={first}"])
    extended = main([*RUN, f"--trainer.max_epochs={then}", f"--ckpt_path={last_of(short)}"])
    straight = main([*RUN, f"--trainer.max_epochs={then}"])
    # the extension goes on in the short run's folder: its first epochs are the short run's, the rest the straight's
    assert Path(extended.trainer.log_dir) == Path(short.trainer.log_dir)
    resumed = epoch_lrs(extended.trainer.log_dir)[first:]
    assert (
        resumed == pytest.approx(epoch_lrs(straight.trainer.log_dir)[first:]) and len(resumed) == then - first
    )
    assert all(lr > 0 for lr in resumed)  # main trained on at lr 0 here


def test_a_plain_resume_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    short = main([*RUN, "--trainer.max_epochs=3"])
    main([*RUN, "--trainer.max_epochs=3", f"--ckpt_path={last_of(short)}"])
    assert "Not as in the checkpoint" not in caplog.text


def test_a_learning_rate_given_with_the_checkpoint_takes_effect_and_is_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    short = main([*RUN, "--trainer.max_epochs=2"])
    resumed = main([*RUN, "--trainer.max_epochs=4", "--model.lr=0.5", f"--ckpt_path={last_of(short)}"])
    assert "Not as in the checkpoint: model.lr 0.003 -> 0.5" in caplog.text
    # the cosine of a 4-epoch schedule from 0.5, at epochs 2 and 3
    expected = [0.5 * (1 + math.cos(math.pi * epoch / 4)) / 2 for epoch in (2, 3)]
    assert epoch_lrs(resumed.trainer.log_dir)[2:] == pytest.approx(expected)
    assert resumed.model.hparams.lr == 0.5
    (recorded,) = (
        yaml.safe_load(p.read_text()) for p in Path(resumed.trainer.log_dir).glob("config-resumed-*")
    )
    assert recorded["model"]["lr"] == 0.5 and recorded["trainer"]["max_epochs"] == 4


def test_weights_of_other_sizes_are_refused_naming_them_and_the_runs_config_loads_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    narrow = main([*RUN, "--trainer.max_epochs=1", "--model.width=16"])
    config = Path(narrow.trainer.log_dir) / "config.yaml"
    for flags in ([], ["--model.width=32"]):
        err = refused(capsys, main, ["test", *QUIET, f"--ckpt_path={last_of(narrow)}", *flags])
        assert "do not fit the model this configuration builds (other shape: net.features.0.0.weight" in err
        assert f"they were trained with width=16; pass --config {config}." in err
    assert sorted(p.name for p in Path("lightning_logs/classifier").iterdir()) == ["version_0"]
    flags = ["--trainer.limit_test_batches=1", f"--config={config}", f"--ckpt_path={last_of(narrow)}"]
    tested = main(["test", *QUIET, *flags])
    assert tested.model.hparams.width == 16


def test_the_schedule_interval_cannot_change_on_resume(capsys: pytest.CaptureFixture[str]) -> None:
    short = main([*RUN, "--trainer.max_epochs=1"])
    err = refused(
        capsys,
        main,
        [*RUN, "--trainer.max_epochs=2", "--model.scheduler_interval=step", f"--ckpt_path={last_of(short)}"],
    )
    assert "steps its schedule every epoch and this run every step" in err


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
