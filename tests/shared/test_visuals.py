"""Pictures and text beside the logs: a file in the run's folder with any logger, TensorBoard's copy when present."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.trainer.states import RunningStage
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shared.visuals import epoch_file, tensorboards
from systems.seq2seq.train import main as seq2seq
from tests.helpers import QUIET


def trainer_with(logger: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False)


def test_the_csv_logger_alone_gets_a_file_in_its_version_folder_and_no_tensorboard(tmp_path: Path) -> None:
    trainer = trainer_with(CSVLogger(tmp_path, name="run"))
    assert (
        epoch_file(trainer, "val/decodings", ".txt")
        == Path(trainer.log_dir) / "val_decodings" / "epoch=000.txt"
    )
    assert (Path(trainer.log_dir) / "val_decodings").is_dir()
    assert tensorboards(trainer) == []
    assert len(tensorboards(trainer_with([CSVLogger(tmp_path), TensorBoardLogger(tmp_path)]))) == 1


def test_nothing_is_written_while_sanity_checking_or_without_a_folder(tmp_path: Path) -> None:
    trainer = trainer_with(CSVLogger(tmp_path))
    trainer.state.stage = RunningStage.SANITY_CHECKING
    assert epoch_file(trainer, "t", ".txt") is None
    assert epoch_file(pl.Trainer(accelerator="cpu", fast_dev_run=True), "t", ".txt") is None
    assert not list(tmp_path.rglob("t"))


def test_the_decodings_are_a_text_file_and_a_tensorboard_code_block() -> None:
    cli = seq2seq(
        [
            "fit",
            *QUIET,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--model.num_examples=1",
            "--test_after_fit=false",
        ]
    )
    text = (Path(cli.trainer.log_dir) / "val_decodings" / "epoch=000.txt").read_text()
    assert text.startswith("epoch 0\n\n") and "target" in text and text.endswith("\n")
    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"tensors": 0}).Reload()
    (event,) = events.Tensors("val/decodings/text_summary")
    assert event.tensor_proto.string_val[0].decode() == "\n".join("    " + line for line in text.splitlines())
