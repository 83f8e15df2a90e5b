"""Bad checkpoints are refused with one sentence before anything runs, and nothing is written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from shared.resume import RandomState
from systems.classifier.train import main
from tests.helpers import QUIET, refused

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


def versions() -> list[str]:
    return sorted(p.name for p in Path("lightning_logs/classifier").iterdir())


def test_a_truncated_checkpoint_is_refused_and_nothing_is_written(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = Path("broken.ckpt")
    broken.write_bytes(trained_run.read_bytes()[:5000])
    before = digest(broken)
    err = refused(capsys, main, ["fit", *SHORT, f"--ckpt_path={broken}"])
    assert "truncated or corrupt" in err and "last.ckpt" in err
    assert digest(broken) == before
    assert versions() == ["version_0"]


def test_a_truncated_last_ckpt_is_refused_naming_the_other_checkpoints_of_its_folder(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    last = trained_run
    last.write_bytes(last.read_bytes()[:5000])
    (last.parent / "interrupted.ckpt").write_bytes(b"")
    others = ", ".join(sorted(p.name for p in last.parent.glob("*.ckpt") if p != last))
    err = refused(capsys, main, ["fit", *SHORT, f"--ckpt_path={last}"])
    assert f"truncated or corrupt. Use another file (its folder holds: {others})." in err
    assert "interrupted.ckpt" in others and "epoch=" in others


def test_a_missing_checkpoint_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert "There is no checkpoint at nowhere.ckpt" in refused(
        capsys, main, ["validate", *QUIET, "--ckpt_path=nowhere.ckpt"]
    )
    assert not Path("lightning_logs").exists()


def test_random_bytes_are_not_a_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    Path("noise.ckpt").write_bytes(torch.randint(0, 256, (4000,), dtype=torch.uint8).numpy().tobytes())
    err = refused(capsys, main, ["test", *QUIET, "--ckpt_path=noise.ckpt"])
    assert "noise.ckpt is not a checkpoint: it is not a file that torch.save writes." in err
    assert "Python objects" not in err


def test_a_checkpoint_with_code_in_it_is_refused_without_advice_to_run_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    torch.save({"state_dict": {}, "payload": _Payload()}, "evil.ckpt")
    err = refused(capsys, main, ["test", *QUIET, "--ckpt_path=evil.ckpt"])
    assert "holds Python objects" in err
    assert "weights_only=False" not in err and "weights_only" not in err
    assert not _Payload.ran


def test_every_checkpoint_lightning_loads_goes_through_the_safe_loader() -> None:
    """Lightning reads a resume's or a test's checkpoint through the strategy's checkpoint IO: the project's."""
    from shared.checkpoints import WholeFileCheckpointIO
    from shared.errors import UserError

    torch.save({"state_dict": {}, "payload": _Payload()}, "evil.ckpt")
    with pytest.raises(UserError, match="holds Python objects"):
        WholeFileCheckpointIO().load_checkpoint("evil.ckpt", weights_only=False)
    assert not _Payload.ran


def test_a_file_that_is_no_lightning_checkpoint_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"weights": torch.ones(2)}, "plain.pt")
    assert "not a Lightning checkpoint" in refused(capsys, main, ["test", *QUIET, "--ckpt_path=plain.pt"])


def test_a_checkpoint_of_another_system_is_refused_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    foreign = other_system_checkpoint(Path("other.ckpt"))
    before = digest(foreign)
    err = refused(capsys, main, ["fit", *SHORT, f"--ckpt_path={foreign}"])
    assert "do not fit the model this configuration builds (missing: net.features" in err
    assert digest(foreign) == before
    assert not Path("lightning_logs").exists()


def test_weights_that_do_not_fit_the_configured_model_are_refused_before_anything_runs(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(
        capsys, main, ["test", *QUIET, f"--ckpt_path={trained_run}", "--data.init_args.classes=[1,2,3]"]
    )
    assert "do not fit the model this configuration builds (other shape: net.head.1.bias" in err
    assert versions() == ["version_0"]


class _Payload:
    """An object whose unpickling would run code: ``weights_only`` must refuse it."""

    ran = False

    def __reduce__(self) -> tuple:
        return (_Payload._run, ())

    @staticmethod
    def _run() -> None:
        _Payload.ran = True


def test_random_states_survive_a_checkpoint() -> None:
    callback = RandomState()
    torch.manual_seed(1)
    state = callback.state_dict()
    expected = torch.rand(3)
    torch.manual_seed(99)
    torch.save(state, "rng.pt")
    callback.load_state_dict(torch.load("rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected)
