"""The classifier's promises: made tensors follow the input, checkpoints round-trip and resume exactly,
bad batches are skipped, outputs kept for the epoch end are freed, schedules step when configured."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from datamodules import DigitsDataModule
from datamodules.mnist import PACKAGED
from shared.errors import UserError
from systems.classifier import Classifier
from systems.classifier.callbacks import ConfusionMatrix
from systems.classifier.model import TypeAsNormalize
from systems.classifier.train import main
from tests.helpers import QUIET, ROOT, real_data

SHORT = [
    *QUIET,
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--test_after_fit=false",
]
MEAN, STD = (0.3053,), (0.3760,)


def quick_trainer(**overrides: object) -> pl.Trainer:
    settings = {
        "max_epochs": 1,
        "max_steps": 2,
        "limit_val_batches": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**{**settings, **overrides})


def normalize_calls(model: Classifier) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record (input, output) of the network's normalisation layer at every call."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.net.normalize.register_forward_hook(lambda module, args, out: calls.append((args[0], out)))
    return calls


@pytest.mark.parametrize("normalization", ["type_as", "buffer"])
@pytest.mark.parametrize("precision", ["64-true", "bf16-mixed", "bf16-true"])
def test_normalisation_follows_the_input_dtype_and_device(normalization: str, precision: str) -> None:
    model = Classifier(normalization=normalization)
    calls = normalize_calls(model)
    quick_trainer(precision=precision).fit(model, datamodule=DigitsDataModule())
    expected_input = {"64-true": torch.float64, "bf16-mixed": torch.float32, "bf16-true": torch.bfloat16}
    for x, out in calls:
        assert x.dtype == expected_input[precision]
        assert out.dtype == x.dtype and out.device == x.device
        reference = (x.double() - MEAN[0]) / STD[0]
        tolerance = {torch.float64: 1e-6, torch.float32: 1e-5, torch.bfloat16: 2e-2}[x.dtype]
        assert torch.allclose(out.double(), reference, atol=tolerance, rtol=tolerance)


def test_type_as_constants_are_exact_in_float64_where_an_fp32_buffer_is_rounded() -> None:
    """Made in forward, the constants are float64 from the start; a buffer made in fp32 and converted by
    ``.double()`` carries fp32's rounding of 0.3053. The README's "when each is right" in one assert."""
    results = {}
    for normalization in ("type_as", "buffer"):
        model = Classifier(normalization=normalization)
        calls = normalize_calls(model)
        quick_trainer(precision="64-true", max_steps=1).fit(model, datamodule=DigitsDataModule())
        x, out = calls[0]
        exact = (x - torch.tensor(MEAN, dtype=torch.float64)) / torch.tensor(STD, dtype=torch.float64)
        results[normalization] = torch.equal(out, exact)
    assert results == {"type_as": True, "buffer": False}


def test_type_as_follows_a_bf16_input_called_directly() -> None:
    x = torch.rand(2, 1, 8, 8, dtype=torch.bfloat16)
    assert TypeAsNormalize(MEAN, STD)(x).dtype == torch.bfloat16


class _AttributeNormalize(nn.Module):
    """The guide's pitfall: constants made in ``__init__`` as a plain attribute stay CPU fp32 forever."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def test_the_guides_pitfall_breaks_where_both_remedies_work() -> None:
    model = Classifier()
    model.net.normalize = _AttributeNormalize(MEAN, STD)
    with pytest.raises(RuntimeError, match=r"(?i)bfloat16|dtype|type"):
        quick_trainer(precision="bf16-true").fit(model, datamodule=DigitsDataModule())


@pytest.mark.gpu
@pytest.mark.parametrize("normalization", ["type_as", "buffer"])
@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_on_cuda_the_constants_are_made_on_the_gpu(normalization: str, precision: str) -> None:
    model = Classifier(normalization=normalization)
    calls = normalize_calls(model)
    quick_trainer(accelerator="gpu", devices=1, precision=precision).fit(model, datamodule=DigitsDataModule())
    for x, out in calls:
        assert x.device.type == "cuda" and out.device == x.device and out.dtype == x.dtype


@pytest.mark.gpu
def test_on_cuda_the_attribute_pitfall_fails() -> None:
    model = Classifier()
    model.net.normalize = _AttributeNormalize(MEAN, STD)
    with pytest.raises(RuntimeError, match=r"(?i)device"):
        quick_trainer(accelerator="gpu", devices=1).fit(model, datamodule=DigitsDataModule())


def test_checkpoint_round_trip_gives_the_same_predictions_and_takes_overrides() -> None:
    cli = main(["fit", *SHORT])
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    x = next(iter(cli.datamodule.test_dataloader()))[0]
    trained = cli.model.eval()
    loaded = Classifier.load_from_checkpoint(path)
    loaded.freeze()  # eval mode and no gradients: ready for inference
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(trained(x), loaded(x))
    overridden = Classifier.load_from_checkpoint(path, lr=0.5, dropout=0.3)
    assert overridden.hparams.lr == 0.5 and overridden.net.head[0].p == 0.3
    assert torch.equal(overridden.net.head[1].weight, loaded.net.head[1].weight)


def test_channels_last_keeps_the_outputs_and_trains_in_nhwc() -> None:
    torch.manual_seed(0)
    nchw, nhwc = Classifier(image_shape=(1, 28, 28)), Classifier(image_shape=(1, 28, 28), channels_last=True)
    nhwc.load_state_dict(nchw.state_dict())
    x = torch.rand(4, 1, 28, 28)
    maps = []  # the first block's output: one grey channel is the same in either layout, 32 are not
    nhwc.net.features[0].register_forward_hook(lambda module, args, out: maps.append(out))
    with torch.no_grad():
        torch.testing.assert_close(nhwc.eval()(x), nchw.eval()(x), rtol=1e-5, atol=1e-5)
    channels_last = [w for w in nhwc.parameters() if w.dim() == 4]
    assert channels_last and all(w.is_contiguous(memory_format=torch.channels_last) for w in channels_last)
    assert maps[0].is_contiguous(memory_format=torch.channels_last) and not maps[0].is_contiguous()
    trainer = quick_trainer(precision="bf16-mixed")
    trainer.fit(Classifier(channels_last=True), datamodule=DigitsDataModule())
    assert trainer.global_step == 2


def test_predict_writes_probabilities_for_the_test_split() -> None:
    main(["fit", *SHORT])
    main(["predict", *QUIET, "--ckpt_path=lightning_logs/classifier/version_0/checkpoints/last.ckpt"])
    written = torch.load("lightning_logs/classifier/version_1/predictions.pt", weights_only=True)
    probabilities = written["predictions"]
    assert probabilities.shape == (359, 10)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(359))


def fit_for_resume(*flags: str) -> dict[str, torch.Tensor]:
    """A 4-epoch run of 4 batches per epoch (so the cosine schedule is sized for 4 epochs), dropout on."""
    cli = main(
        [
            "fit",
            *QUIET,
            "--trainer.max_epochs=4",
            "--trainer.limit_train_batches=4",
            "--trainer.limit_val_batches=1",
            "--trainer.deterministic=true",
            "--test_after_fit=false",
            "--model.dropout=0.3",
            *flags,
        ]
    )
    return {k: v.clone() for k, v in cli.model.state_dict().items()}


def test_resume_from_last_ckpt_gives_the_weights_of_an_uninterrupted_run() -> None:
    straight = fit_for_resume()
    fit_for_resume("--trainer.max_steps=8")  # stops after epoch 2 of 4: version_1
    resumed = fit_for_resume("--ckpt_path=lightning_logs/classifier/version_1/checkpoints/last.ckpt")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def batches_with_a_nan(nan_batch: int) -> DataLoader:
    data = DigitsDataModule()
    data.setup("fit")
    x = torch.stack([data.train_set[i][0] for i in range(96)])
    y = torch.tensor([data.train_set[i][1] for i in range(96)])
    x[nan_batch * 32 + 5, 0, 3, 3] = float("nan")
    return DataLoader(TensorDataset(x, y), batch_size=32)


class _Snapshots(pl.Callback):
    def __init__(self) -> None:
        self.after_batch: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        self.after_batch.append({k: v.clone() for k, v in module.state_dict().items()})


def test_a_batch_with_a_non_finite_loss_is_skipped_and_leaves_no_trace() -> None:
    model, snapshots = Classifier(), _Snapshots()
    quick_trainer(max_steps=3, max_epochs=1, callbacks=[snapshots]).fit(model, batches_with_a_nan(1))
    before, after = snapshots.after_batch[0], snapshots.after_batch[1]
    assert model.skipped_batches == 1
    for name in before:  # weights, Adam moments aside, and BatchNorm statistics: all as before the batch
        assert torch.equal(before[name], after[name]), name
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_without_the_guard_a_nan_batch_poisons_the_model() -> None:
    model = Classifier(skip_nonfinite=False)
    quick_trainer(max_steps=3, max_epochs=1).fit(model, batches_with_a_nan(1))
    assert not all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_validation_outputs_are_kept_for_the_epoch_end_then_freed() -> None:
    cli = main(["fit", *SHORT, "--trainer.limit_val_batches=1.0"])
    confusion = next(c for c in cli.trainer.callbacks if isinstance(c, ConfusionMatrix))  # the module's own
    assert confusion.outputs == []
    matrix = confusion.matrix
    assert matrix.shape == (10, 10) and int(matrix.sum()) == 180  # every validation image, once
    figures = sorted(p.name for p in (Path(cli.trainer.log_dir) / "val_confusion_matrix").iterdir())
    assert figures == ["epoch=000.csv", "epoch=000.png", "epoch=001.csv", "epoch=001.png"]
    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0}).Reload()
    shown = events.Images("val/confusion_matrix")  # TensorBoard's copy of each epoch's figure
    assert [image.step for image in shown] == [4, 8] and all(image.width >= 400 for image in shown)


class _LearningRates(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_the_schedule_steps_at_the_configured_interval(interval: str) -> None:
    rates = _LearningRates()
    trainer = quick_trainer(max_steps=-1, max_epochs=2, limit_train_batches=3, callbacks=[rates])
    trainer.fit(Classifier(scheduler_interval=interval), datamodule=DigitsDataModule())
    first_epoch, second_epoch = rates.seen[:3], rates.seen[3:]
    assert first_epoch[0] == 0.003
    if interval == "epoch":
        assert len(set(first_epoch)) == 1 and len(set(second_epoch)) == 1 and second_epoch[0] < first_epoch[0]
    else:
        assert len(set(rates.seen)) == 6


def test_trainer_test_with_best_loads_the_best_checkpoint() -> None:
    cli = main(["fit", *SHORT])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best")
    assert cli.trainer.ckpt_path == cli.trainer.checkpoint_callback.best_model_path
    assert "epoch=" in Path(cli.trainer.ckpt_path).name


def test_early_stopping_from_config_yaml_ends_a_run_that_stopped_improving() -> None:
    cli = main(
        [*["fit", *SHORT], "--trainer.max_epochs=20", "--trainer.limit_train_batches=2", "--model.lr=1e-9"]
    )
    stopper = cli.trainer.early_stopping_callback
    assert stopper.patience == 6 and stopper.monitor == "val/acc"
    assert 0 < stopper.stopped_epoch < 19 and cli.trainer.current_epoch == stopper.stopped_epoch + 1


def test_bad_hyperparameters_are_refused_with_the_fix() -> None:
    with pytest.raises(UserError, match="one value per channel"):
        Classifier(image_shape=(3, 32, 32))
    with pytest.raises(UserError, match="sized by max_epochs, which is -1"):
        quick_trainer(max_epochs=-1, max_steps=2).fit(Classifier(), datamodule=DigitsDataModule())


@pytest.mark.slow
def test_the_default_run_learns_digits() -> None:
    cli = main(["fit", "--trainer.enable_progress_bar=false"])
    assert cli.trainer.callback_metrics["test/acc"] >= 0.95


@pytest.mark.slow
def test_config_fashion_learns_fashion_mnist_far_above_chance_in_100_batches() -> None:
    real_data(PACKAGED["fashion_mnist"], "apt-get install dataset-fashion-mnist")
    fashion = ["--config", str(ROOT / "systems/classifier/config_fashion.yaml")]
    cli = main(["fit", *fashion, *QUIET, "--trainer.max_epochs=1", "--trainer.limit_train_batches=100"])
    assert len(cli.datamodule.test_set) == 10_000
    assert cli.trainer.callback_metrics["test/acc"] >= 0.7  # chance: 0.1


def test_the_plain_loop_runs_on_its_own_and_learns() -> None:
    """``plain.py``: the same training without Lightning (its agreement with the module: the benchmarks)."""
    from systems.classifier.plain import main as plain_main

    assert plain_main(epochs=3) >= 0.9
