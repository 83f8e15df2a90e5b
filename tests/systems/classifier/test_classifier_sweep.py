"""The sweep: trials as ordinary run folders, a pruner fed each epoch, a study that a rerun continues, Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from systems.classifier.sweep import main as sweep
from tests.helpers import QUIET, ctrl_c_after_first_epoch, extra, refused

STUDY = Path("sweep.db")
# two epochs of a few batches each, the study in ./sweep.db
TINY = [*QUIET, "--study=sweep.db", "--trainer.max_epochs=2", "--trainer.limit_train_batches=4"]
TINY += ["--test_after_fit=false"]


@pytest.fixture
def optuna() -> Any:
    """Optuna, the ``sweep`` extra: the tests that run trials skip without it, except in CI (``extra``)."""
    extra(("optuna",), "pip install -e '.[sweep]'")
    import optuna

    return optuna


def trials() -> list[Any]:
    import optuna

    return optuna.load_study(study_name="classifier", storage=f"sqlite:///{STUDY}").trials


def test_without_optuna_the_sweep_names_the_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # what `import optuna` meets where it is not installed
    err = refused(capsys, sweep, TINY)
    assert 'The sweep needs Optuna: pip install -e ".[sweep]"' in err
    assert not list(Path().iterdir())


@pytest.mark.slow  # Optuna's import and a parse each: about 1 s
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trials=0"], "--trials=0 runs nothing: set it to 1 or more."),
        (["--checkpoint.monitor=null"], "The sweep ranks trials by checkpoint.monitor, which is unset"),
        (["--trainer.limit_val_batches=0"], "--trainer.limit_val_batches=0 validates nothing"),
        (["--trainer.fast_dev_run=true"], "fast_dev_run logs no metric to rank trials by: drop it."),
    ],
)
def test_settings_that_cannot_rank_trials_are_refused_before_any_is_run(
    optuna: Any, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refused(capsys, sweep, [*TINY, *flags])
    assert not list(Path().iterdir())


@pytest.mark.slow
def test_a_mistake_the_first_trial_finds_leaves_nothing(
    optuna: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(capsys, sweep, [*TINY, "--study=studies/sweep.db", "--trainer.accumulate_grad_batches=0"])
    assert "--trainer.accumulate_grad_batches=0 would never step" in err
    assert not list(Path().iterdir())


@pytest.mark.slow
def test_each_trial_is_a_run_folder_and_a_rerun_continues_the_study(
    optuna: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep([*TINY, "--trials=2"])
    first = trials()
    assert [t.state for t in first] == [optuna.trial.TrialState.COMPLETE] * 2
    # trial 0 runs the configuration as given, the next what the sampler draws
    assert first[0].params == {"lr": 3e-3, "weight_decay": 1e-4, "dropout": 0.1, "width": 32}
    assert first[1].params != first[0].params
    for trial in first:
        run = Path(trial.user_attrs["run"])
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert {k: config["model"][k] for k in trial.params} == trial.params
        assert (run / "checkpoints/last.ckpt").is_file()
        assert trial.value == max(trial.intermediate_values.values())  # the best val/acc, reported each epoch
        assert sorted(trial.intermediate_values) == [0, 1]
    sweep([*TINY, "--trials=3"])  # the same study: one more trial
    again = trials()
    assert len(again) == 3 and [t.params for t in again[:2]] == [t.params for t in first]
    assert again[2].params not in [t.params for t in first]
    assert len({t.user_attrs["run"] for t in again}) == 3
    # other settings would make trials that do not compare: refused, the study as it was
    err = refused(capsys, sweep, [*TINY, "--trials=4", "--trainer.max_epochs=3"])
    assert "sweep.db holds a study of other settings than these flags give" in err
    assert len(trials()) == 3


@pytest.mark.slow
def test_the_pruner_stops_a_trial_that_trails_the_others(optuna: Any) -> None:
    study = optuna.create_study(study_name="classifier", storage=f"sqlite:///{STUDY}", direction="maximize")
    study.enqueue_trial({"lr": 3e-3, "weight_decay": 1e-4, "dropout": 0.1, "width": 32})
    study.enqueue_trial({"lr": 1e-8, "weight_decay": 1e-4, "dropout": 0.1, "width": 32})  # learns nothing
    flags = ["--trials=2", "--startup_trials=1", "--warmup_epochs=0", "--trainer.limit_train_batches=20"]
    sweep([*TINY, *flags, "--trainer.max_epochs=3"])
    good, bad = trials()
    assert good.state == optuna.trial.TrialState.COMPLETE and bad.state == optuna.trial.TrialState.PRUNED
    assert list(bad.intermediate_values) == [0]  # stopped at its first report
    assert bad.intermediate_values[0] < good.intermediate_values[0]
    assert (Path(bad.user_attrs["run"]) / "config.yaml").is_file()


@pytest.mark.slow
def test_ctrl_c_in_a_trial_records_it_as_failed_and_the_same_command_goes_on(
    optuna: Any, tmp_path: Path
) -> None:
    flags = [*QUIET, "--study=sweep.db", "--trials=2", "--trainer.max_epochs=4", "--test_after_fit=false"]
    status, err = ctrl_c_after_first_epoch("systems.classifier.sweep", *flags, cwd=tmp_path)
    assert status == 130, err[-2000:]
    assert "Traceback" not in err
    assert "Trial 0 is recorded as failed in sweep.db; the same command goes on with the study" in err
    assert [t.state for t in trials()] == [optuna.trial.TrialState.FAIL]
    assert (tmp_path / "lightning_logs/classifier/version_0/checkpoints/interrupted.ckpt").is_file()
    sweep(flags)  # the same command: the study is whole, two trials are added
    states = [t.state for t in trials()]
    assert states[0] == optuna.trial.TrialState.FAIL and len(states) == 3
    assert optuna.trial.TrialState.RUNNING not in states
