"""Checkpoints: the round trip, resume at an epoch end, and resume in the middle of a critic cycle."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from systems.gan import GAN
from systems.gan.model import is_critic_batch
from systems.gan.train import main
from tests.helpers import assert_same_weights, send_signal
from tests.systems.gan.conftest import StepRecorder


def _weights(model: GAN) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: GAN, b: GAN) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=1e-6, msg=name)


def test_round_trip_maps_the_fixed_latents_to_the_same_images_and_an_override_takes_effect(fast) -> None:
    cli = main(["fit", *fast, "--trainer.max_epochs=1", "--trainer.limit_train_batches=6"])
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    expected = cli.model.render(cli.model.fixed_latents)

    loaded = GAN.load_from_checkpoint(path)
    assert torch.equal(loaded.fixed_latents, cli.model.fixed_latents)
    assert torch.equal(loaded.render(loaded.fixed_latents), expected)

    overridden = GAN.load_from_checkpoint(path, n_critic=2)
    assert overridden.hparams.n_critic == 2
    hp = overridden.hparams
    assert [is_critic_batch(i, hp.n_critic, hp.n_generator) for i in range(4)] == [True, True, False, True]


def test_predict_writes_samples_from_a_checkpoint(fast) -> None:
    cli = main(["fit", *fast, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    predicted = main(["predict", *fast, f"--ckpt_path={path}"])
    written = torch.load(Path(predicted.trainer.log_dir) / "predictions.pt", weights_only=True)["predictions"]
    assert written.shape == (len(predicted.datamodule.test_set), 1, 8, 8)
    assert written.min() >= -1 and written.max() <= 1


def test_resume_from_last_ckpt_gives_the_uninterrupted_weights(fit_recorded) -> None:
    # 7 batches per epoch with n_critic=2: an epoch ends inside a cycle; the decay makes the schedulers count
    flags = [
        "--model.n_critic=2",
        "--trainer.limit_train_batches=7",
        "--model.lr_decay_to=0.5",
        "--trainer.max_epochs=3",
    ]
    whole, _, whole_steps = fit_recorded(*flags)

    _, stopped_trainer, _ = fit_recorded(*flags, "--trainer.max_steps=14")
    last = Path(stopped_trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    resumed, trainer, resumed_steps = fit_recorded(*flags, ckpt_path=str(last))

    assert resumed_steps.trace == whole_steps.trace[14:] == "DDGDDGD"
    assert trainer.global_step == 21
    _assert_same_weights(resumed, whole)
    assert [s.last_epoch for s in resumed.lr_schedulers()] == [3, 3]


def test_resume_in_the_middle_of_a_critic_cycle_continues_it(fit_recorded) -> None:
    """Stopped after 3 of 5 critic batches (a checkpoint written mid-epoch), the resumed run steps the
    critic twice more, then the generator, sees the batches the whole run saw, and ends with its weights."""
    flags = ["--model.n_critic=5", "--trainer.limit_train_batches=8", "--trainer.max_epochs=2"]
    whole, _, whole_steps = fit_recorded(*flags)
    assert whole_steps.trace == "DDDDDGDD" * 2

    every_3 = [
        "--checkpoint.monitor=null",
        "--checkpoint.every_n_train_steps=3",
        "--checkpoint.filename=step={step}",
    ]
    _, stopped_trainer, stopped_steps = fit_recorded(*flags, *every_3, "--trainer.max_steps=3")
    assert stopped_steps.trace == "DDD"
    mid_cycle = Path(stopped_trainer.log_dir) / "checkpoints" / "step=3.ckpt"
    resumed, trainer, resumed_steps = fit_recorded(*flags, ckpt_path=str(mid_cycle))

    assert resumed_steps.trace == "DDGDD" + "DDDDDGDD"
    assert trainer.global_step == 16
    _assert_same_weights(resumed, whole)


def test_resume_warns_nothing_about_an_unresumable_loader(
    fit_recorded, recwarn: pytest.WarningsRecorder
) -> None:
    flags = ["--trainer.limit_train_batches=4", "--trainer.max_epochs=1"]
    every_2 = [
        "--checkpoint.monitor=null",
        "--checkpoint.every_n_train_steps=2",
        "--checkpoint.filename=step={step}",
    ]
    _, stopped_trainer, _ = fit_recorded(*flags, *every_2, "--trainer.max_steps=2")
    fit_recorded(*flags, ckpt_path=str(Path(stopped_trainer.log_dir) / "checkpoints" / "step=2.ckpt"))
    assert not [w for w in recwarn if "not resumable" in str(w.message)]


def test_ctrl_c_in_a_later_epoch_mid_critic_cycle_resumes_bit_identically(fast: list[str]) -> None:
    flags = [
        "fit",
        *fast,
        "--model.n_critic=2",
        "--trainer.limit_train_batches=7",
        "--model.lr_decay_to=0.5",
        "--trainer.max_epochs=3",
        "--trainer.deterministic=true",
    ]
    straight = main(flags)
    with pytest.raises(SystemExit) as stop:  # epoch 1, batch 4: the critic's second batch of a cycle
        main([*flags, send_signal("after_backward", 1, 4)])
    assert stop.value.code == 130
    checkpoint = next(Path("lightning_logs/gan").glob("version_1/checkpoints/interrupted.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 12  # 7 + 5 batches
    resumed = main([*flags, f"--ckpt_path={checkpoint}"])
    assert resumed.trainer.global_step == 21
    assert_same_weights(resumed.model, straight.model)
    assert [s.last_epoch for s in resumed.model.lr_schedulers()] == [3, 3]


def epoch_lrs(cli: object) -> list[float]:
    """The critic's and the generator's learning rates of each trained epoch, as LearningRateMonitor saw them."""
    with open(Path(cli.trainer.log_dir) / "metrics.csv", newline="") as file:
        rows = [r for r in csv.DictReader(file) if r.get("lr-Adam")]
    return [float(r[name]) for r in rows for name in ("lr-Adam", "lr-Adam-1")]


def test_extending_a_run_stretches_the_decay_over_the_new_length(fast: list[str]) -> None:
    flags = [
        "fit",
        *fast,
        "--trainer.limit_train_batches=6",
        "--model.lr_decay_to=0.2",
        "--trainer.callbacks+=pytorch_lightning.callbacks.LearningRateMonitor",
        "--trainer.callbacks.logging_interval=epoch",
    ]
    short = main([*flags, "--trainer.max_epochs=2"])
    last = Path(short.trainer.log_dir) / "checkpoints/last.ckpt"
    extended = main([*flags, "--trainer.max_epochs=5", f"--ckpt_path={last}"])
    straight = main([*flags, "--trainer.max_epochs=5"])
    assert epoch_lrs(extended)[4:] == pytest.approx(epoch_lrs(straight)[4:])  # in the short run's folder
    assert [s.total_iters for s in extended.model.lr_schedulers()] == [5, 5]


def test_n_critic_given_with_the_checkpoint_takes_effect(fast: list[str]) -> None:
    flags = ["fit", *fast, "--trainer.limit_train_batches=8"]
    first = main([*flags, "--trainer.max_epochs=1"])
    last = Path(first.trainer.log_dir) / "checkpoints/last.ckpt"
    recorder = "--trainer.callbacks+=tests.systems.gan.conftest.StepRecorder"
    resumed = main([*flags, "--trainer.max_epochs=2", "--model.n_critic=3", recorder, f"--ckpt_path={last}"])
    steps = next(c for c in resumed.trainer.callbacks if isinstance(c, StepRecorder))
    assert resumed.model.hparams.n_critic == 3 and steps.trace == "DDDGDDDG"
    # the resume continues the first run's folder, beside whose config.yaml it records its own
    (recorded,) = (
        yaml.safe_load(p.read_text()) for p in Path(resumed.trainer.log_dir).glob("config-resumed-*")
    )
    assert recorded["model"]["n_critic"] == 3


def test_fast_dev_run_steps_no_scheduler_before_its_optimizer(
    fast: list[str], recwarn: pytest.WarningsRecorder
) -> None:
    main(["fit", *fast, "--model.lr_decay_to=0.5", "--trainer.fast_dev_run=1"])
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]


def test_a_checkpoint_from_before_the_average_loads_with_the_old_architecture_named(tmp_path: Path) -> None:
    """Checkpoints written before ``generator_blocks`` and ``ema_decay`` existed (their hyper-parameters
    lack both): the new defaults refuse them, naming the weights that do not fit; the README's two
    overrides load them and draw the images the old generator drew."""
    old = GAN(generator_blocks=0, ema_decay=0.0)
    hyper_parameters = {k: v for k, v in old.hparams.items() if k not in ("generator_blocks", "ema_decay")}
    path = tmp_path / "old.ckpt"
    version = {"pytorch-lightning_version": pl.__version__}
    torch.save({"state_dict": old.state_dict(), "hyper_parameters": hyper_parameters, **version}, path)

    with pytest.raises(RuntimeError, match=r"generator\.body"):
        GAN.load_from_checkpoint(path)
    loaded = GAN.load_from_checkpoint(path, generator_blocks=0, ema_decay=0.0)
    assert torch.equal(loaded.render(old.fixed_latents), old.render(old.fixed_latents))
