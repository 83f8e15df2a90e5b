"""The pattern: 1.x's optimizer-frequency order, global_step, toggling, the penalty, schedulers, shapes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from shared.errors import UserError
from systems.gan import GAN
from systems.gan.model import Discriminator, Generator, gradient_penalty

# Lightning 1.9.5 with ({'optimizer': d, 'frequency': n_critic}, {'optimizer': g, 'frequency': n_generator}),
# 20 batches (one epoch of the digits default: 1,258 training images in batches of 64)
REFERENCE_1X = {
    (5, 1): "DDDDDGDDDDDGDDDDDGDD",
    (3, 2): "DDDGGDDDGGDDDGGDDDGG",
    (1, 1): "DG" * 10,
}


@pytest.mark.parametrize(("n_critic", "n_generator"), list(REFERENCE_1X))
def test_step_order_is_the_1x_frequency_cycle_and_global_step_counts_batches(
    fit_recorded, n_critic: int, n_generator: int
) -> None:
    _, trainer, recorder = fit_recorded(
        f"--model.n_critic={n_critic}", f"--model.n_generator={n_generator}", "--trainer.max_epochs=2"
    )
    # 1.x keyed the cycle on the batch index within the epoch: the second epoch starts it over
    assert recorder.trace == REFERENCE_1X[(n_critic, n_generator)] * 2
    # the README's statement: each batch steps exactly one optimizer, so global_step == batches trained
    assert trainer.global_step == 40
    d_optimizer, g_optimizer = trainer.optimizers
    adam_steps = [int(next(iter(opt.state.values()))["step"]) for opt in (d_optimizer, g_optimizer)]
    assert adam_steps == [recorder.trace.count("D"), recorder.trace.count("G")]


def test_max_steps_counts_batches(fit_recorded) -> None:
    _, trainer, recorder = fit_recorded("--model.n_critic=5", "--trainer.max_steps=7")
    assert trainer.global_step == 7
    assert recorder.trace == "DDDDDGD"


def test_a_step_never_touches_the_other_network(fit_recorded) -> None:
    _, _, recorder = fit_recorded(
        "--model.n_critic=2", "--trainer.limit_train_batches=6", "--trainer.max_epochs=1"
    )
    assert recorder.trace == "DDGDDG"
    assert recorder.violations == []


def test_without_toggling_the_generator_step_writes_into_the_critic_grads(
    fit_recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorder catches what toggle_optimizer prevents: the check above can fail."""
    monkeypatch.setattr(GAN, "toggle_optimizer", lambda self, optimizer: None)
    monkeypatch.setattr(GAN, "untoggle_optimizer", lambda self, optimizer: None)
    _, _, recorder = fit_recorded(
        "--model.n_critic=2", "--trainer.limit_train_batches=3", "--trainer.max_epochs=1"
    )
    assert recorder.violations == ["batch 2: D.grad changed during a G step"]


def test_gradient_penalty_is_fp32_and_finite_under_cpu_autocast() -> None:
    model = GAN(judge=False, width=8)
    real, fake = torch.rand(8, 1, 8, 8) * 2 - 1, torch.rand(8, 1, 8, 8) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.discriminator(real).dtype == torch.bfloat16
        penalty = gradient_penalty(model.discriminator, real, fake.bfloat16())
    assert penalty.dtype == torch.float32
    assert torch.isfinite(penalty)


def test_bf16_mixed_training_keeps_the_penalty_finite(fit_recorded) -> None:
    model, trainer, recorder = fit_recorded(
        "--trainer.precision=bf16-mixed", "--trainer.limit_train_batches=6", "--trainer.max_epochs=1"
    )
    assert recorder.trace == "DDGDDG"
    for name in ("train/gp", "train/d_loss", "train/g_loss"):
        assert math.isfinite(trainer.callback_metrics[name].item()), name
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.gpu
def test_16_mixed_on_gpu_keeps_the_penalty_finite(fit_recorded) -> None:
    model, trainer, recorder = fit_recorded(
        "--trainer.accelerator=gpu",
        "--trainer.devices=1",
        "--trainer.precision=16-mixed",
        "--model.width=32",
        "--trainer.limit_train_batches=12",
        "--trainer.max_epochs=1",
    )
    # the GradScaler may skip the first steps while it finds its scale (weights unchanged: "-"), but never
    # hands a batch to the wrong network, and the step counts all the same
    assert all(done in (planned, "-") for done, planned in zip(recorder.trace, "DDG" * 4, strict=True))
    assert trainer.global_step == 12
    assert recorder.violations == []
    assert math.isfinite(trainer.callback_metrics["train/gp"].item())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_schedulers_step_once_per_epoch(fit_recorded) -> None:
    model, trainer, _ = fit_recorded(
        "--model.lr_decay_to=0.5",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=2",
        "--model.n_critic=1",
    )
    d_optimizer, g_optimizer = trainer.optimizers
    # two epoch ends: the linear decay has reached its end, half of each starting rate
    assert d_optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * model.hparams.lr_discriminator)
    assert g_optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * model.hparams.lr_generator)
    assert [s.last_epoch for s in model.lr_schedulers()] == [2, 2]


def test_an_epoch_too_short_for_a_generator_step_is_warned(fit_recorded) -> None:
    with pytest.warns(UserWarning, match="the generator never steps"):
        _, _, recorder = fit_recorded(
            "--model.n_critic=5", "--trainer.limit_train_batches=3", "--trainer.max_epochs=2"
        )
    assert recorder.trace == "DDD" * 2


@pytest.mark.parametrize("bad", [0, -1])
def test_frequencies_must_be_positive(bad: int) -> None:
    with pytest.raises(UserError, match=r"model\.n_critic and model\.n_generator must be 1 or more"):
        GAN(n_critic=bad)
    with pytest.raises(UserError, match=r"model\.n_critic and model\.n_generator must be 1 or more"):
        GAN(n_generator=bad)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (1, 32, 32), (3, 32, 32)])
def test_networks_fit_each_image_shape(shape: tuple[int, int, int]) -> None:
    generator, critic = Generator(16, shape, width=8), Discriminator(shape, width=8)
    images = generator(torch.randn(4, 16))
    assert images.shape == (4, *shape)
    assert images.min() >= -1 and images.max() <= 1
    critic(images).sum().backward()
    assert all(p.grad is not None for p in [*generator.parameters(), *critic.parameters()])


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_the_system_trains_on_mnist_and_cifar_shapes(shape: tuple[int, int, int]) -> None:
    model = GAN(image_shape=shape, width=8, latent_dim=16, n_critic=1, judge=False)
    images = torch.rand(8, *shape) * 2 - 1
    loader = DataLoader(TensorDataset(images, torch.zeros(8)), batch_size=4)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 2
    samples = model.sample(5)
    assert samples.shape == (5, *shape)
    assert samples.min() >= -1 and samples.max() <= 1


def test_sample_leaves_the_generator_mode_and_the_fixed_latents_follow_the_module() -> None:
    model = GAN(judge=False, width=8)
    model.train()
    first, second = model.render(model.fixed_latents), model.render(model.fixed_latents)
    assert torch.equal(first, second)  # eval mode: BatchNorm's running statistics, no batch mixing
    assert model.generator.training
    assert "fixed_latents" in model.state_dict()
    assert model.double().fixed_latents.dtype == torch.float64


class SchedulerSteps(pl.Callback):
    """Which schedulers stepped at each epoch's end: ``D``, ``G``, ``DG`` or ``-``, one entry per epoch."""

    def __init__(self) -> None:
        self.trace: list[str] = []
        self._last: list[int] | None = None

    def _record(self, pl_module: GAN) -> None:
        now = [s.last_epoch for s in pl_module.lr_schedulers()]
        if self._last is not None:
            self.trace.append(
                "".join(n for n, a, b in zip("DG", self._last, now, strict=True) if b > a) or "-"
            )
        self._last = now

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: GAN) -> None:
        self._record(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: GAN) -> None:
        self._record(pl_module)


# Lightning 1.9.5 itself, the GAN's nets, 6 epochs of 20 batches, frequencies (5, 1), lr decay on:
# the critic's scheduler stepped after epochs 0, 1, 3 and 4, the generator's after 2 and 5
REFERENCE_1X_SCHEDULERS = ["D", "D", "G", "D", "D", "G"]
CADENCE = [
    "--trainer.limit_train_batches=20",
    "--model.n_critic=5",
    "--model.lr_decay_to=0.5",
    "--trainer.max_epochs=6",
]


def test_the_lightning_1x_scheduler_cadence_reproduces_1_9_5(fit_recorded) -> None:
    steps = SchedulerSteps()
    model, _, _ = fit_recorded(*CADENCE, "--model.scheduler_cadence=lightning_1x", callbacks=[steps])
    assert steps.trace == REFERENCE_1X_SCHEDULERS
    assert [s.last_epoch for s in model.lr_schedulers()] == [4, 2]


def test_the_default_cadence_steps_both_schedulers_every_epoch(fit_recorded) -> None:
    steps = SchedulerSteps()
    model, _, _ = fit_recorded(*CADENCE, callbacks=[steps])
    assert steps.trace == ["DG"] * 6
    d_optimizer, g_optimizer = model.optimizers()
    assert d_optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * model.hparams.lr_discriminator)
    assert g_optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * model.hparams.lr_generator)


def test_the_1x_cadence_continues_exactly_after_a_resume_mid_epoch(fast: list[str]) -> None:
    from systems.gan.train import main
    from tests.helpers import assert_same_weights, send_signal

    flags = ["fit", *fast, *CADENCE, "--model.scheduler_cadence=lightning_1x", "--trainer.deterministic=true"]
    straight = main(flags)
    with pytest.raises(SystemExit):  # Ctrl-C in epoch 2, before its last batch decides
        main([*flags, send_signal("after_backward", 2, 7)])
    checkpoint = next(iter(sorted(Path("lightning_logs/gan").glob("version_1/checkpoints/interrupted.ckpt"))))
    resumed = main([*flags, f"--ckpt_path={checkpoint}"])
    assert [s.last_epoch for s in resumed.model.lr_schedulers()] == [4, 2]
    assert_same_weights(resumed.model, straight.model)
