"""``log_text``: a text file in the run's folder with any logger, and TensorBoard's text when present."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.trainer.states import RunningStage
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shared.visuals import log_text


def trainer_with(logger: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False)


def test_the_csv_logger_alone_gets_a_text_file_in_its_version_folder(tmp_path: Path) -> None:
    trainer = trainer_with(CSVLogger(tmp_path, name="run"))
    path = log_text(trainer, "val/decodings", "line one\n  line two")
    assert path == Path(trainer.log_dir) / "val_decodings" / "epoch=000.txt"
    assert path.read_text() == "line one\n  line two\n"


def test_tensorboard_gets_the_text_as_a_code_block(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = trainer_with(logger)
    assert log_text(trainer, "val/decodings", "a\nb").is_file()
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0}).Reload()
    (event,) = events.Tensors("val/decodings/text_summary")
    assert event.tensor_proto.string_val[0].decode() == "    a\n    b"


def test_nothing_is_written_while_sanity_checking_or_without_a_folder(tmp_path: Path) -> None:
    trainer = trainer_with(CSVLogger(tmp_path))
    trainer.state.stage = RunningStage.SANITY_CHECKING
    assert log_text(trainer, "t", "x") is None
    assert log_text(pl.Trainer(accelerator="cpu", fast_dev_run=True), "t", "x") is None
    assert not list(tmp_path.rglob("*.txt"))
