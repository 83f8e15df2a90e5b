"""The transfer system through its command lines: pretrain -> export -> train, checkpoints, resume, DDP,
and the learning test (transfer against training from scratch)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from datamodules import CIFAR10DataModule
from shared.checkpoints import read_checkpoint
from systems.transfer import TransferLearner
from systems.transfer.model import build_backbone
from systems.transfer.pretrain import main as pretrain
from systems.transfer.train import main as train
from systems.transfer.weights import PRETRAINED_BACKBONE
from tests.datamodules.test_cifar import write_cifar
from tests.helpers import QUIET, ROOT, assert_same_weights, refused, run_module, send_signal

# small runs: 16 px images, two batches of 16 per epoch
SMALL = [
    "--data.init_args.image_size=16",
    "--data.init_args.batch_size=16",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
]


@pytest.fixture
def pretrained() -> dict[str, torch.Tensor]:
    """A backbone file where config.yaml looks for it (random weights: these tests check mechanics)."""
    torch.manual_seed(0)
    state = build_backbone("resnet18")[0].state_dict()
    Path(PRETRAINED_BACKBONE).parent.mkdir(parents=True)
    torch.save(state, PRETRAINED_BACKBONE)
    return state


def backbone_of(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    weights = read_checkpoint(checkpoint)["state_dict"]
    return {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}


@pytest.mark.slow
def test_fast_dev_run_pretrain_through_the_real_cli(tmp_path: Path) -> None:
    result = run_module("systems.transfer.pretrain", "fit", "--trainer.fast_dev_run=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"fast_dev_run: the backbone is not exported to {PRETRAINED_BACKBONE}"
        in result.stdout + result.stderr
    )
    assert not (tmp_path / PRETRAINED_BACKBONE).exists()


@pytest.mark.slow
def test_fast_dev_run_train_through_the_real_cli(tmp_path: Path, pretrained: dict) -> None:
    result = run_module("systems.transfer.train", "fit", "--trainer.fast_dev_run=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Backbone weights loaded from {PRETRAINED_BACKBONE}" in result.stdout + result.stderr


def test_train_without_a_pretrained_backbone_says_run_pretrain_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = refused(capsys, train, ["fit", *QUIET, *SMALL, "--trainer.max_epochs=1"])
    assert re.search(r"run `python -m systems.transfer.pretrain` first .*IMAGENET1K_V1", err)
    assert not list(Path().glob("lightning_logs/transfer/version_*"))  # stopped before writing a run folder


@pytest.mark.parametrize(
    ("flag", "allowed"),
    [
        ("--model.arch=resnet101", "'resnet18', 'resnet34', 'resnet50', 'efficientnet_lite0'"),
        ("--model.bn_policy=adapt", "'frozen', 'train'"),
    ],
)
def test_an_arch_or_bn_policy_that_the_types_do_not_list_is_refused_with_the_choices(
    capsys: pytest.CaptureFixture[str], flag: str, allowed: str
) -> None:
    """Their Literal types are the check: the parser names the values it takes, before anything runs."""
    err = refused(capsys, train, ["fit", *QUIET, flag])
    assert f"Literal[{allowed}]. Got value: {flag.split('=')[1]}" in err
    assert not Path("lightning_logs").exists()


def test_pretrain_exports_its_best_backbone_and_train_transfers_it_frozen() -> None:
    source = pretrain(["fit", *QUIET, *SMALL, "--trainer.max_epochs=2", "--test_after_fit=false"])
    best = source.trainer.checkpoint_callback.best_model_path
    assert "val_acc=" in best
    exported = torch.load(PRETRAINED_BACKBONE, weights_only=True)
    expected = backbone_of(best)
    assert set(exported) == set(expected) and all(torch.equal(exported[k], expected[k]) for k in expected)
    assert source.model.hparams.num_classes == 10 and source.datamodule.half == "first"

    target = train(["fit", *QUIET, *SMALL, "--trainer.max_epochs=2", "--test_after_fit=false"])
    assert target.datamodule.classes == [5, 6, 7, 8, 9] and target.datamodule.half == "second"
    after = target.model.backbone.state_dict()
    assert all(torch.equal(after[k], exported[k]) for k in exported)


def test_cifar10_colour_images_flow_into_the_same_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar(tmp_path / "data", monkeypatch)
    cli = train(
        [
            "fit",
            *QUIET,
            "--trainer.fast_dev_run=true",
            "--model.weights=null",
            "--data=datamodules.CIFAR10DataModule",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.classes=null",
            "--data.init_args.val_size=6",
            "--data.init_args.batch_size=4",
        ]
    )
    assert cli.model.hparams.image_shape == (3, 32, 32) and cli.model.hparams.num_classes == 10
    assert cli.model.hparams.mean == CIFAR10DataModule.pixel_mean


def test_checkpoint_round_trip(pretrained: dict) -> None:
    cli = train(["fit", *QUIET, *SMALL, "--trainer.max_epochs=1", "--test_after_fit=false"])
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    Path(PRETRAINED_BACKBONE).unlink()  # the checkpoint must not need the file it started from
    model = cli.model.eval()
    restored = TransferLearner.load_from_checkpoint(last).eval()
    x = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
    fast = TransferLearner.load_from_checkpoint(last, channels_last=True).eval()
    assert fast.hparams.channels_last and fast.backbone.conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="Missing key"):  # Lightning's own strict load
        TransferLearner.load_from_checkpoint(last, arch="resnet34")
    # freeze() for inference (the 1.x idiom, unchanged): no gradients anywhere, eval mode
    restored.freeze()
    assert not any(p.requires_grad for p in restored.parameters()) and not restored.training


def test_resume_after_the_unfreeze_milestone_matches_an_uninterrupted_run(pretrained: dict) -> None:
    flags = [*QUIET, *SMALL, "--test_after_fit=false", "--model.unfreeze_at_epoch=1", "--model.dropout=0.3"]
    whole = train(["fit", *flags, "--trainer.max_epochs=3"])
    first = train(["fit", *flags, "--trainer.max_epochs=2"])
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    resumed = train(["fit", *flags, "--trainer.max_epochs=3", f"--ckpt_path={last}"])
    groups = [[g["name"] for g in cli.trainer.optimizers[0].param_groups] for cli in (whole, resumed)]
    assert groups == [["head", "backbone"], ["head", "backbone"]]
    expected, got = whole.model.state_dict(), resumed.model.state_dict()
    assert set(expected) == set(got)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert not torch.equal(expected["backbone.layer4.1.conv2.weight"], pretrained["layer4.1.conv2.weight"])


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_one_backbone_after_unfreezing(tmp_path: Path, pretrained: dict) -> None:
    """DDP syncs only the parameters that were trainable when it wrapped the model: the stages that join at
    the milestone are averaged by UnfreezeBackbone, so both processes end with the same weights."""
    probe_folder = Path(__file__).parent  # transfer_rank_probe.SaveWeightsPerRank
    result = run_module(
        "systems.transfer.train",
        "fit",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        *SMALL,
        "--trainer.max_epochs=2",
        "--model.unfreeze_at_epoch=1",
        "--test_after_fit=false",
        "--trainer.callbacks+=transfer_rank_probe.SaveWeightsPerRank",
        cwd=tmp_path,
        env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(probe_folder)])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"weights-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert set(ranks[0]) == set(ranks[1])
    differ = [k for k in ranks[0] if not torch.equal(ranks[0][k], ranks[1][k])]
    assert differ == []
    name = "layer4.1.conv2.weight"
    assert not torch.equal(ranks[0][f"backbone.{name}"], pretrained[name])
    assert torch.equal(ranks[0]["backbone.layer3.1.conv2.weight"], pretrained["layer3.1.conv2.weight"])


@pytest.mark.slow
def test_transfer_beats_training_from_scratch_with_the_same_budget() -> None:
    """The default chain against the same ResNet-18 trained whole from random weights, on the same target
    data (digits 5-9 of the second half, 30% labelled) for the same 8 epochs."""
    source = pretrain(["fit", *QUIET])
    source_acc = float(source.trainer.callback_metrics["test/acc"])
    transfer = train(["fit", *QUIET])
    transfer_acc = float(transfer.trainer.callback_metrics["test/acc"])
    scratch = train(
        [
            "fit",
            *QUIET,
            "--model.weights=null",
            "--model.unfreeze_at_epoch=0",
            "--model.unfreeze_stages=5",
            "--model.bn_policy=train",
            "--model.lr=0.003",
            "--model.backbone_lr=0.003",
        ]
    )
    scratch_acc = float(scratch.trainer.callback_metrics["test/acc"])
    print(f"source {source_acc:.4f}, transfer {transfer_acc:.4f}, scratch {scratch_acc:.4f}")
    assert source_acc > 0.85
    assert transfer_acc > 0.9
    assert transfer_acc > scratch_acc + 0.05


def test_ctrl_c_in_a_later_epoch_after_the_milestone_resumes_bit_identically(pretrained: dict) -> None:
    flags = [
        "fit",
        *QUIET,
        *SMALL,
        "--test_after_fit=false",
        "--model.unfreeze_at_epoch=1",
        "--model.dropout=0.3",
    ]
    flags += ["--trainer.max_epochs=3", "--trainer.deterministic=true"]
    whole = train(flags)
    with pytest.raises(SystemExit) as stop:  # epoch 1, first batch: the backbone has just joined
        train([*flags, send_signal("after_backward", 1, 0)])
    assert stop.value.code == 130
    checkpoint = Path("lightning_logs/transfer/version_1/checkpoints/interrupted.ckpt")
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3
    resumed = train([*flags, f"--ckpt_path={checkpoint}"])
    assert [g["name"] for g in resumed.trainer.optimizers[0].param_groups] == ["head", "backbone"]
    assert_same_weights(resumed.model, whole.model)
