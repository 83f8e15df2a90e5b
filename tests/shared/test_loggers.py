"""Any logger beside the run's own folder: MLflow's and W&B's runs side by side, each with its ``config.yaml`` and
figures as its artifacts; TensorBoard's HParams tab with each run's settings and its last validation metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from systems.classifier.train import main
from tests.helpers import QUIET, extra, refused

SHORT = [
    *QUIET,
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--test_after_fit=false",
]
RATES = (0.003, 0.01)  # one run each


def two_runs(*flags: str) -> list[Path]:
    """Two fits in this folder, one per learning rate; their run folders, each checked to be complete."""
    for lr in RATES:
        main(["fit", *SHORT, *flags, f"--model.lr={lr}"])
    folders = sorted(Path("lightning_logs/classifier").iterdir())
    assert [folder.name for folder in folders] == ["version_0", "version_1"]
    for folder in folders:
        names = {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
        assert {
            "config.yaml",
            "metrics.csv",
            "checkpoints/last.ckpt",
            "val_confusion_matrix/epoch=001.png",
        } <= names
    return folders


def last_validation(folder: Path) -> dict[str, float]:
    """The run's last validation metrics, from its ``metrics.csv``."""
    with open(folder / "metrics.csv", newline="") as file:
        row = [r for r in csv.DictReader(file) if r["val/acc"]][-1]
    return {"val/acc": float(row["val/acc"]), "val/loss": float(row["val/loss"])}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_mlflow_runs_side_by_side_each_with_its_config_and_figures(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra(("mlflow",), "pip install -e '.[mlflow]'")
    from mlflow import MlflowClient

    # the README's sqlite:///mlflow.db and file:./mlruns, made absolute: MLflow keeps a store per URI in the process
    store = {"sqlite": f"sqlite:///{tmp_path}/mlflow.db", "file": f"file:{tmp_path}/mlruns"}[kind]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.17 refuses its file store without it
    logger = "--trainer.logger=pytorch_lightning.loggers.MLFlowLogger"
    flags = [logger, f"--trainer.logger.tracking_uri={store}", "--trainer.logger.experiment_name=digits"]
    folders = two_runs(*flags)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("digits").experiment_id

    def runs() -> list:
        return client.search_runs([experiment], order_by=["attributes.start_time ASC"])

    def artifacts(run_id: str) -> set[str]:
        return {
            a.path for folder in ("", "val_confusion_matrix") for a in client.list_artifacts(run_id, folder)
        }

    assert len(runs()) == 2
    for run, folder, lr in zip(runs(), folders, RATES, strict=True):
        run_id = run.info.run_id
        assert run.info.status == "FINISHED" and float(run.data.params["lr"]) == lr
        assert run.data.metrics["val/acc"] == pytest.approx(last_validation(folder)["val/acc"])
        figures = {f"val_confusion_matrix/epoch=00{i}.{x}" for i in (0, 1) for x in ("png", "csv")}
        assert artifacts(run_id) == {"config.yaml", "val_confusion_matrix", *figures}
        config = client.download_artifacts(run_id, "config.yaml", str(tmp_path / run_id))
        assert Path(config).read_text() == (folder / "config.yaml").read_text()
        assert f"lr: {lr}" in Path(config).read_text()
    # a resume continues version_1's folder; in MLflow it is a run of its own, from the resume on
    main(["fit", *SHORT, *flags, f"--model.lr={RATES[1]}", "--trainer.max_epochs=3", "--ckpt_path=last"])
    resumed = runs()[2].info.run_id
    figures = {f"val_confusion_matrix/epoch=002.{x}" for x in ("png", "csv")}
    assert artifacts(resumed) == {"config-resumed-at-step-4.yaml", "val_confusion_matrix", *figures}
    assert runs()[2].data.metrics["val/acc"] == pytest.approx(last_validation(folders[1])["val/acc"])


@pytest.mark.slow
def test_mlflows_refusal_of_its_file_store_is_one_sentence_naming_the_fix(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    extra(("mlflow",), "pip install -e '.[mlflow]'")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    logger = "--trainer.logger=pytorch_lightning.loggers.MLFlowLogger"
    store = f"--trainer.logger.tracking_uri=file:{Path.cwd()}/mlruns"  # absolute: a store new to this process
    err = refused(capsys, main, ["fit", *SHORT, logger, store])
    assert "sqlite:///mlflow.db" in err and "MLFLOW_ALLOW_FILE_STORE=true" in err
    assert list(Path().iterdir()) == []  # nothing written


@pytest.mark.slow
def test_wandb_offline_runs_side_by_side_each_with_its_config_and_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra(("wandb",), "pip install -e '.[wandb]'")
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    for lr in RATES:
        main(["fit", *SHORT, "--trainer.logger=pytorch_lightning.loggers.WandbLogger", f"--model.lr={lr}"])
        wandb.finish()  # as the end of the command's process does
    folders = sorted(Path("lightning_logs/classifier").iterdir())
    runs = sorted(Path("wandb").glob("offline-run-*"))
    assert len(runs) == 2
    for run, folder, lr in zip(runs, folders, RATES, strict=True):
        files = run / "files"
        config = (files / folder.name / "config.yaml").read_text()
        assert config == (folder / "config.yaml").read_text() and f"lr: {lr}" in config
        assert (files / folder.name / "val_confusion_matrix/epoch=001.csv").is_file()
        assert len(list((files / "media/images/val").glob("confusion_matrix_*.png"))) == 2  # one per epoch


@pytest.mark.slow
def test_the_hparams_tab_shows_each_runs_settings_with_its_last_validation_metrics() -> None:
    folders = two_runs("--data.batch_size=32")
    for folder, lr in zip(folders, RATES, strict=True):
        events = EventAccumulator(str(folder))
        events.Reload()
        tab = {
            tag: HParamsPluginData.FromString(c) for tag, c in events.PluginTagToContent("hparams").items()
        }
        settings = tab["_hparams_/session_start_info"].session_start_info.hparams
        assert settings["model.lr"].number_value == lr and settings["data.batch_size"].number_value == 32
        assert settings["data.class_path"].string_value == "datamodules.DigitsDataModule"
        assert settings["model.image_shape"].string_value == "(1, 8, 8)"  # linked from the data
        metrics = {m.name.tag for m in tab["_hparams_/experiment"].experiment.metric_infos}
        assert metrics == {"val/acc", "val/loss"}
        last = last_validation(folder)
        for name in metrics:  # what the tab shows: the latest value of the run's own series
            assert events.Scalars(name)[-1].value == pytest.approx(last[name])
