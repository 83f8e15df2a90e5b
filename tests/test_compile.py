"""``--model.compile=true`` in every system: the compiled step trains as the eager one (fp32 tolerance), each
system's pattern survives it (the GAN's double backward, the classifier's non-finite skip, the seq2seq's chunk
lengths, the transfer's frozen backbone), and checkpoints move between compiled and eager modules."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch._dynamo
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader, TensorDataset

from systems.classifier import Classifier
from systems.classifier.train import main as classifier_main
from systems.gan import GAN
from systems.gan.train import main as gan_main
from systems.seq2seq import Seq2Seq
from systems.seq2seq.train import main as seq2seq_main
from systems.transfer import TransferLearner
from systems.transfer.train import main as transfer_main
from tests.helpers import QUIET, weights
from tests.systems.seq2seq.test_seq2seq_cli import TINY

# each system's CLI and flags for a run of three training batches (no dropout: a compiled dropout draws its own
# random numbers, so its masks differ from the eager ones)
RUNS = {
    "classifier": (classifier_main, ["--model.dropout=0"]),
    "gan": (gan_main, ["--model.width=8", "--model.latent_dim=16", "--model.judge=false"]),
    "seq2seq": (seq2seq_main, TINY),
    "transfer": (
        transfer_main,
        ["--model.weights=null", "--data.init_args.image_size=16", "--data.init_args.batch_size=8"],
    ),
}
MODULES = {"classifier": Classifier, "gan": GAN, "seq2seq": Seq2Seq, "transfer": TransferLearner}


@pytest.mark.parametrize("system", MODULES)
def test_compiled_modules_have_the_eager_state_dict_keys(system: str) -> None:
    """Compiling in place (``nn.Module.compile``) leaves no ``_orig_mod.`` in the keys: either loads the other's."""
    torch.manual_seed(0)
    eager, compiled = MODULES[system](), MODULES[system](compile=True)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.load_state_dict(eager.state_dict())  # strict: every key on both sides
    eager.load_state_dict(compiled.state_dict())


def fit(system: str, compile: bool, *extra: str) -> pl.LightningModule:
    main, flags = RUNS[system]
    args = [
        "fit",
        *QUIET,
        *flags,
        *extra,
        f"--model.compile={str(compile).lower()}",
        "--seed_everything=0",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=1",
        "--test_after_fit=false",
    ]
    return main(args).model


def training_log(model: pl.LightningModule) -> dict[str, float]:
    """Every training value the run logged (per step and per epoch), from its metrics.csv."""
    with open(Path(model.trainer.log_dir) / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return {f"{k}@{r['step']}": float(v) for r in rows for k, v in r.items() if k.startswith("train/") and v}


@pytest.mark.slow
@pytest.mark.parametrize("system", MODULES)
def test_a_compiled_fit_trains_as_the_eager_one(system: str) -> None:
    """Three batches with ``--model.compile=true`` (inductor, CPU): every logged loss within fp32 tolerance of the
    eager run's, and the weights too, but for the few that an Adam step moves by its whole lr either way (a
    gradient that is ~0 steps by +-lr, whichever side of zero rounding puts it). The compiled run's last.ckpt
    loads into an eager module and the eager run's into a compiled one."""
    torch._dynamo.reset()
    eager = fit(system, False, "--trainer.log_every_n_steps=1")
    compiled = fit(system, True, "--trainer.log_every_n_steps=1")
    expected = training_log(eager)
    assert len(expected) >= 3
    torch.testing.assert_close(training_log(compiled), expected, rtol=1e-4, atol=1e-6)
    apart = [
        (weights(compiled)[k] - v).abs() > 1e-4 for k, v in weights(eager).items() if v.is_floating_point()
    ]
    assert sum(int(a.sum()) for a in apart) <= 1e-3 * sum(a.numel() for a in apart)
    [saved, eager_saved] = sorted(Path("lightning_logs", system).glob("version_*/checkpoints/last.ckpt"))[
        ::-1
    ]
    state = torch.load(saved, weights_only=False)["state_dict"]
    assert not [key for key in state if "_orig_mod" in key]
    reloaded = type(eager).load_from_checkpoint(saved, compile=False)
    for name, value in weights(compiled).items():
        assert torch.equal(weights(reloaded)[name], value), name
    type(eager).load_from_checkpoint(eager_saved, compile=True)
    if system == "transfer":  # frozen, compiled or not: both backbones still hold the same starting weights
        for name, value in eager.backbone.state_dict().items():
            assert torch.equal(compiled.backbone.state_dict()[name], value), name


@pytest.mark.slow
def test_a_compiled_classifier_still_skips_a_non_finite_batch() -> None:
    """The skip sits in ``training_step``, outside the compiled network: a NaN batch is counted and skipped."""
    torch.manual_seed(0)
    images = torch.rand(12, 1, 8, 8)
    images[4:8] = float("nan")  # the second batch of four
    data = DataLoader(TensorDataset(images, torch.randint(0, 10, (12,))), batch_size=4)
    model = Classifier(compile=True, dropout=0.0)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.warns(UserWarning, match="Non-finite loss at epoch 0, batch 1: skipped"):
        trainer.fit(model, data)
    assert model.skipped_batches == 1
    assert all(torch.isfinite(v).all() for v in weights(model).values())


@pytest.mark.slow
def test_the_compiled_seq2seq_loss_compiles_once_for_every_chunk_length() -> None:
    """Chunks of 8, then the last chunks of 5, 3, 7, 2 and 6 steps: one graph for them all, counted by Dynamo (a
    static compile makes a second at the first new length; a chunk of one step would make one more, as Dynamo
    specialises sizes 0 and 1), and the eager loss."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    counters.clear()
    model = Seq2Seq(hidden_size=16, embedding_dim=8, compile=True)
    made = []
    for length in (8, 8, 5, 3, 7, 2, 6):
        inputs = torch.randint(0, 10, (4, length))
        loss, _, _ = model.chunk_loss(inputs, inputs, torch.ones(4, length, dtype=torch.bool), None)
        loss.backward()
        made.append(counters["stats"]["unique_graphs"])
    assert made == [1] * 7
    eager = Seq2Seq(hidden_size=16, embedding_dim=8)
    eager.load_state_dict(model.state_dict())
    mask = torch.ones(4, 6, dtype=torch.bool)
    expected, _, _ = eager.chunk_loss(inputs, inputs, mask, None)
    torch.testing.assert_close(model.chunk_loss(inputs, inputs, mask, None)[0], expected)
