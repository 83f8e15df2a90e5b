"""Bad checkpoints are refused with one sentence and nothing is written; crashes leave a resumable file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from datamodules import DigitsDataModule, MNISTDataModule
from shared.callbacks import CrashCheckpoint, RandomStateCallback
from systems.classifier import Classifier
from systems.classifier.train import main
from tests.helpers import QUIET

SHORT = [*QUIET, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]


class _OtherSystem(pl.LightningModule):
    """A stand-in for another system: other hyper-parameters, other weights."""

    def __init__(self, n_critic: int = 5, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(hidden, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def other_system_checkpoint(path: Path) -> Path:
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(_OtherSystem(), torch.utils.data.DataLoader(torch.randn(4, 4), batch_size=2))
    trainer.save_checkpoint(path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def trained_run() -> Path:
    """A finished short run; returns its last.ckpt."""
    main(["fit", *SHORT, "--test_after_fit=false"])
    return Path("lightning_logs/classifier/version_0/checkpoints/last.ckpt")


def test_a_truncated_checkpoint_is_refused_and_nothing_is_written(trained_run: Path) -> None:
    broken = Path("broken.ckpt")
    broken.write_bytes(trained_run.read_bytes()[:5000])
    before = digest(broken)
    with pytest.raises(ValueError, match=r"truncated or corrupt.*last\.ckpt"):
        main(["fit", *SHORT, f"--ckpt_path={broken}"])
    assert digest(broken) == before
    assert sorted(p.name for p in Path("lightning_logs/classifier").iterdir()) == ["version_0"]


def test_a_missing_checkpoint_names_an_example_path() -> None:
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at nowhere\.ckpt.*last\.ckpt"):
        main(["validate", *QUIET, "--ckpt_path=nowhere.ckpt"])


def test_a_file_that_is_no_lightning_checkpoint_is_refused() -> None:
    torch.save({"weights": torch.ones(2)}, "plain.pt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        main(["test", *QUIET, "--ckpt_path=plain.pt"])


def test_a_checkpoint_of_another_system_is_refused_by_the_cli() -> None:
    foreign = other_system_checkpoint(Path("other.ckpt"))
    before = digest(foreign)
    with pytest.raises(
        ValueError, match=r"comes from another system \(its hyper-parameters hidden, n_critic"
    ):
        main(["fit", *SHORT, f"--ckpt_path={foreign}"])
    assert digest(foreign) == before
    assert not Path("lightning_logs").exists()


def test_a_checkpoint_naming_another_class_is_refused(trained_run: Path) -> None:
    checkpoint = torch.load(trained_run, weights_only=True)
    checkpoint["hyper_parameters"]["_class_path"] = "systems.gan.module.GAN"
    torch.save(checkpoint, "renamed.ckpt")
    with pytest.raises(ValueError, match=r"written by systems\.gan\.module\.GAN, not by Classifier"):
        main(["predict", *QUIET, "--ckpt_path=renamed.ckpt"])


def test_load_from_checkpoint_refuses_weights_that_do_not_fit() -> None:
    foreign = other_system_checkpoint(Path("other.ckpt"))
    with pytest.raises(ValueError, match=r"do not fit Classifier \(missing: .*unexpected: layer\.bias"):
        Classifier.load_from_checkpoint(foreign)


class _Crashing(Classifier):
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_step == 3:
            raise RuntimeError("the data centre lost power")
        return super().training_step(batch, batch_idx)


def test_a_crash_during_fit_leaves_a_resumable_checkpoint(tmp_path: Path) -> None:
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=5,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=[CrashCheckpoint(tmp_path)],
    )
    with pytest.raises(RuntimeError, match="lost power"):
        trainer.fit(_Crashing(), datamodule=DigitsDataModule())
    saved = torch.load(tmp_path / "on_exception.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    resumed = pl.Trainer(max_epochs=2, limit_train_batches=5, limit_val_batches=1, logger=False)
    resumed.fit(Classifier(), datamodule=DigitsDataModule(), ckpt_path=tmp_path / "on_exception.ckpt")
    assert resumed.global_step == 10


def test_no_crash_checkpoint_for_errors_before_training(tmp_path: Path) -> None:
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, callbacks=[CrashCheckpoint(tmp_path)]
    )
    missing = MNISTDataModule(data_dir=str(tmp_path / "nothing"), download=False)
    with pytest.raises(FileNotFoundError, match="download is off"):
        trainer.fit(Classifier(), datamodule=missing)
    assert not (tmp_path / "on_exception.ckpt").exists()


def test_random_states_survive_a_checkpoint() -> None:
    callback = RandomStateCallback()
    torch.manual_seed(1)
    state = callback.state_dict()
    expected = torch.rand(3)
    torch.manual_seed(99)
    torch.save(state, "rng.pt")
    callback.load_state_dict(torch.load("rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected)
