"""The shared CLI, driven through the classifier: defaults, one version folder, links, bad input."""

from __future__ import annotations

import contextlib
import csv
import re
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from shared.cli import SystemCLI
from shared.resume import LastCheckpoint
from shared.table import MetricsTable
from systems.classifier.train import main
from tests.helpers import QUIET, ROOT, refused

SHORT = [
    *QUIET,
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
]


def metrics_rows(folder: str) -> list[dict[str, str]]:
    with open(Path(folder) / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def versions() -> list[str]:
    return sorted(p.name for p in Path("lightning_logs/classifier").iterdir())


def test_no_arguments_means_fit_with_config_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.setattr(SystemCLI, "fit", lambda self, **kwargs: calls.append(kwargs), raising=False)
    monkeypatch.setattr(SystemCLI, "after_fit", lambda self: None)
    cli = main()
    assert cli.subcommand == "fit" and len(calls) == 1
    assert cli.trainer.max_epochs == 30 and cli.model.hparams.lr == 0.003
    assert type(cli.datamodule).__name__ == "DigitsDataModule"


def test_flags_without_a_subcommand_mean_fit() -> None:
    cli = main([*SHORT, "--trainer.max_epochs=1", "--test_after_fit=false"])
    assert cli.subcommand == "fit" and cli.trainer.global_step == 3


@pytest.mark.parametrize(("args", "parsers"), [(["validate"], 2), ([], 2), (["--help"], 5)])
def test_only_the_given_subcommands_parser_is_built_and_help_builds_all(
    args: list[str], parsers: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Each subcommand's parser reads every signature again: a command builds the main parser and its own."""
    built = []
    monkeypatch.setattr(
        SystemCLI,
        "init_parser",
        lambda cli, **kw: built.append(1) or SystemCLI.__base__.init_parser(cli, **kw),
    )
    with pytest.raises(SystemExit) if args == ["--help"] else contextlib.nullcontext():
        main([*args, *QUIET, "--trainer.fast_dev_run=1"] if args != ["--help"] else args)
    assert len(built) == parsers
    assert args != ["--help"] or "{fit,validate,test,predict}" in capsys.readouterr().out


def test_both_loggers_and_the_checkpoints_share_one_version_folder() -> None:
    main(["fit", *SHORT])
    folder = Path("lightning_logs/classifier/version_0")
    names = {p.name for p in folder.iterdir()}
    assert {"metrics.csv", "hparams.yaml", "config.yaml", "checkpoints"} <= names
    assert any(name.startswith("events.out.tfevents") for name in names)
    checkpoints = {p.name for p in (folder / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints
    assert any(re.fullmatch(r"epoch=0[01]-val_acc=0\.\d{4}\.ckpt", name) for name in checkpoints)
    saved = torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["datamodule_hyper_parameters"]
    assert saved["_class_path"] == "datamodules.DigitsDataModule"  # what predict on one's own data reads
    assert "batch_size" not in (folder / "hparams.yaml").read_text()  # the model's, without the data's
    assert versions() == ["version_0"]
    main(["fit", *SHORT])
    assert versions() == ["version_0", "version_1"]


def test_last_ckpt_is_the_latest_epoch_even_when_the_best_is_older() -> None:
    # lr=0 after one epoch: val/acc cannot improve, so the monitored callback keeps epoch 0
    cli = main(["fit", *SHORT, "--trainer.max_epochs=3", "--model.lr=1e-9", "--test_after_fit=false"])
    latest = next(cb for cb in cli.trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint))
    assert Path(latest.best_model_path).name == "last.ckpt"
    last = torch.load(latest.best_model_path, weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 9
    assert isinstance(cli.trainer.checkpoint_callback, ModelCheckpoint)
    assert cli.trainer.checkpoint_callback.monitor == "val/acc"


def test_fit_ends_with_a_test_of_the_best_checkpoint(caplog: pytest.LogCaptureFixture) -> None:
    cli = main(["fit", *SHORT])
    best = cli.trainer.checkpoint_callback.best_model_path
    assert best and cli.trainer.ckpt_path == best
    assert "test/acc" in cli.trainer.callback_metrics
    # the module's own callbacks (the confusion matrix) come back for the test without Lightning saying so
    assert "will override existing callbacks" not in caplog.text
    cli = main(["fit", *SHORT, "--test_after_fit=false"])
    assert "test/acc" not in cli.trainer.callback_metrics


def test_facts_flow_from_the_datamodule_into_the_model() -> None:
    cli = main(
        ["fit", *SHORT, "--trainer.max_epochs=1", "--data.init_args.classes=[5,6,7]", "--data.image_size=16"]
    )
    assert cli.model.hparams.num_classes == 3
    assert cli.model.net.head[-1].out_features == 3
    assert tuple(cli.model.hparams.image_shape) == (1, 16, 16)
    assert cli.model.hparams.mean == pytest.approx(cli.datamodule.mean)


def test_another_datamodule_is_chosen_by_class_path(tmp_path: Path) -> None:
    from tests.datamodules.test_mnist import fake_mnist

    fake_mnist(tmp_path / "data", n_train=80, n_test=16)
    cli = main(
        [
            "fit",
            *SHORT,
            "--trainer.max_epochs=1",
            "--data=datamodules.MNISTDataModule",
            "--data.data_dir=data",
            "--data.download=false",
            "--data.val_size=16",
            "--data.batch_size=16",
        ]
    )
    assert type(cli.datamodule).__name__ == "MNISTDataModule"
    assert tuple(cli.model.hparams.image_shape) == (1, 28, 28)
    assert cli.model.hparams.mean == pytest.approx((0.1307,))


def test_print_config_shows_the_merged_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--print_config", "--model.width=8"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: datamodules.DigitsDataModule" in printed
    assert "width: 8" in printed and "monitor: val/acc" in printed


def test_metrics_table_prints_a_row_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    cli = main(["fit", *SHORT, "--test_after_fit=false"])
    table = next(cb for cb in cli.trainer.callbacks if isinstance(cb, MetricsTable))
    assert [row["epoch"] for row in table.rows] == [0, 1]
    assert {"train/loss", "val/acc", "val/loss"} <= set(table.rows[-1])
    out = capsys.readouterr().out
    assert out.count("val/acc") >= 2 and "│" in out


@pytest.mark.parametrize(
    ("flag", "message"),
    [("--model.lrr=0.1", "lrr"), ("--trainer.max_epoch=3", "max_epoch")],
)
def test_a_mistyped_key_stops_before_anything_runs(
    flag: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", flag])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not Path("lightning_logs").exists()


def test_a_mistyped_key_in_a_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("model:\n  widht: 8\n")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config)])
    assert "widht" in capsys.readouterr().err
    assert not Path("lightning_logs").exists()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--model.lr=-1", "lr must be > 0"),
        ("--model.dropout=1.5", "model.dropout must be in [0, 1)"),
        ("--data.batch_size=0", "data.batch_size must be 1 or more"),
    ],
)
def test_a_wrong_value_is_one_sentence_naming_the_fix(
    flag: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refused(capsys, main, ["fit", *SHORT, flag])
    assert not Path("lightning_logs").exists()


def test_what_self_log_writes_where() -> None:
    """on_step and on_epoch give ``train/loss_step`` every ``log_every_n_steps`` and ``train/loss_epoch``
    once per epoch; validation metrics are epoch values; a ``reduce_fx="sum"`` metric sums the epoch."""
    main(["fit", *SHORT, "--trainer.limit_train_batches=6", "--trainer.log_every_n_steps=2"])
    rows = metrics_rows("lightning_logs/classifier/version_0")
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert steps == [1, 3, 5, 7, 9, 11]
    assert len([r for r in rows if r.get("train/loss_epoch")]) == 2
    assert len([r for r in rows if r.get("val/acc")]) == 2
    assert [float(r["train/skipped_batches"]) for r in rows if r.get("train/skipped_batches")] == [0.0, 0.0]


def test_val_check_interval_and_an_int_fast_dev_run() -> None:
    main(["fit", *SHORT, "--trainer.limit_train_batches=4", "--trainer.val_check_interval=2"])
    rows = metrics_rows("lightning_logs/classifier/version_0")
    assert len([r for r in rows if r.get("val/acc")]) == 4  # every 2 of 4 batches, 2 epochs
    cli = main(["fit", *QUIET, "--trainer.fast_dev_run=3"])
    assert cli.trainer.global_step == 3 and not Path("lightning_logs/classifier/version_1").exists()


def test_save_weights_only_drops_the_optimizer_state() -> None:
    main(["fit", *SHORT, "--checkpoint.save_weights_only=true", "--test_after_fit=false"])
    best = next(Path("lightning_logs/classifier/version_0/checkpoints").glob("epoch=*.ckpt"))
    last = Path("lightning_logs/classifier/version_0/checkpoints/last.ckpt")
    assert "optimizer_states" not in torch.load(best, weights_only=True)
    assert "optimizer_states" in torch.load(last, weights_only=True)  # last.ckpt must stay resumable


FAKE_LIGHTNING = {  # a `lightning` package of its own classes, as the real one installed beside would be
    "lightning/__init__.py": "",
    "lightning/pytorch/__init__.py": "",
    "lightning/pytorch/callbacks.py": "class LearningRateMonitor:\n    pass\n",
    "lightning/pytorch/loggers.py": "class CSVLogger:\n    pass\n",
}
DOCS_SPELLING = [
    "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor",
    "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
    "--trainer.logger.init_args.save_dir=csv",
]


def fake_lightning(folder: Path) -> Path:
    for name, text in FAKE_LIGHTNING.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_lightning_docs_class_paths_are_this_projects_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    monkeypatch.syspath_prepend(str(fake_lightning(tmp_path / "fake")))
    config = tmp_path / "mine.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
        "      init_args: {monitor: val/acc}\n"
    )
    cli = main(["fit", *SHORT, "--trainer.max_epochs=1", f"--config={config}", *DOCS_SPELLING])
    assert (
        isinstance(cli.trainer.logger, CSVLogger)
        and Path("csv/lightning_logs/version_0/metrics.csv").is_file()
    )
    kinds = {type(c).__name__ for c in cli.trainer.callbacks}
    assert {"EarlyStopping", "LearningRateMonitor"} <= kinds
    assert any(isinstance(c, LearningRateMonitor) for c in cli.trainer.callbacks)


@pytest.mark.slow
def test_lightning_docs_class_paths_through_the_real_command_line(tmp_path: Path) -> None:
    from tests.helpers import run_module

    fake = fake_lightning(tmp_path / "fake")
    flags = [*SHORT, "--trainer.max_epochs=1", "--test_after_fit=false", *DOCS_SPELLING]
    result = run_module(
        "systems.classifier.train", "fit", *flags, cwd=tmp_path, env={"PYTHONPATH": f"{ROOT}:{fake}"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "csv/lightning_logs/version_0/metrics.csv").is_file()
