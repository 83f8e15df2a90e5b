"""What "frozen" promises, checked on real fits: weights and statistics untouched, eval mode in every epoch,
only trainable parameters in the optimizer, no graph through the backbone, and staged unfreezing."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from datamodules import DigitsDataModule
from shared.errors import UserError
from systems.transfer import TransferLearner
from systems.transfer.model import build_backbone

SIZE = 16  # ResNet-18 at 16 px: every stage still runs, in a fraction of the time at 32 px


def make_model(**overrides: Any) -> TransferLearner:
    """Random starting weights (``weights=None``): these tests check what training does to them."""
    return TransferLearner(**{"num_classes": 5, "image_shape": (1, SIZE, SIZE), "weights": None, **overrides})


def fit(model: TransferLearner, epochs: int = 2, callbacks: list | None = None, **trainer: Any) -> pl.Trainer:
    pl.seed_everything(0)
    data = DigitsDataModule(batch_size=16, image_size=SIZE, classes=[5, 6, 7, 8, 9])
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=trainer.pop("limit_train_batches", 3),
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator=trainer.pop("accelerator", "cpu"),
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **trainer,
    )
    trainer.fit(model, data)
    return trainer


def optimizer_params(trainer: pl.Trainer) -> set[int]:
    return {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (BatchNorm running mean, variance and batch count included)."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


class ModeProbe(pl.Callback):
    """Record, at every training batch, the train/eval mode of the backbone's parts and the head."""

    def __init__(self) -> None:
        self.batchnorm: list[bool] = []
        self.convolutions: list[bool] = []
        self.head: list[bool] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: TransferLearner, *args: Any) -> None:
        modules = list(pl_module.backbone.modules())
        self.batchnorm += [m.training for m in modules if isinstance(m, _BatchNorm)]
        self.convolutions += [m.training for m in modules if isinstance(m, torch.nn.Conv2d)]
        self.head.append(pl_module.head.training)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: TransferLearner) -> None:
        # what a user's callback, to_onnx() or an overridden on_validation_model_train may do between epochs
        pl_module.train()


def test_frozen_fit_leaves_every_backbone_weight_and_statistic_bit_identical() -> None:
    model = make_model()
    backbone, head = snapshot(model.backbone), snapshot(model.head)
    trainer = fit(model, epochs=2, val_check_interval=0.5)
    after = model.backbone.state_dict()
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    changed = [name for name, value in backbone.items() if not torch.equal(value, after[name])]
    assert changed == []
    assert all(not p.requires_grad for p in model.backbone.parameters())
    # only the head is in the optimizer, and it did learn
    assert optimizer_params(trainer) == {id(p) for p in model.head.parameters()}
    assert [g["name"] for g in trainer.optimizers[0].param_groups] == ["head"]
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head.items())


def test_bn_policy_train_updates_statistics_only() -> None:
    model = make_model(bn_policy="train")
    before = snapshot(model.backbone)
    fit(model, epochs=1)
    after = model.backbone.state_dict()
    statistics = [k for k in before if "running_" in k or "num_batches_tracked" in k]
    assert all(not torch.equal(before[k], after[k]) for k in statistics)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in statistics)


def test_backbone_stays_in_eval_mode_through_every_epoch() -> None:
    probe = ModeProbe()
    fit(make_model(dropout=0.2), epochs=3, callbacks=[probe], val_check_interval=0.5)
    assert probe.batchnorm and not any(probe.batchnorm)
    assert probe.convolutions and not any(probe.convolutions)
    assert probe.head and all(probe.head)


def test_features_build_no_graph_while_frozen() -> None:
    model = make_model()
    # an input that requires grad would pull the whole backbone into the graph without torch.no_grad
    x = torch.rand(4, 1, SIZE, SIZE, requires_grad=True)
    features = model.features(x)
    assert features.shape == (4, 512) and features.grad_fn is None and not features.requires_grad
    model(x).logsumexp(dim=1).sum().backward()
    assert x.grad is None
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    trainable = make_model(unfreeze_at_epoch=0)
    assert trainable.features(x).grad_fn is not None


class GroupProbe(pl.Callback):
    """Record the optimizer's groups at each epoch's first batch, and layer4's weights at each epoch end."""

    def __init__(self) -> None:
        self.groups: list[list[tuple[str, float, int]]] = []
        self.layer4: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: TransferLearner, batch: Any, idx: int
    ) -> None:
        if idx == 0:
            groups = trainer.optimizers[0].param_groups
            self.groups.append([(g["name"], g["lr"], len(g["params"])) for g in groups])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: TransferLearner) -> None:
        self.layer4.append(snapshot(pl_module.backbone.layer4))


def test_unfreeze_milestone_adds_a_group_at_its_lr_and_the_backbone_then_learns() -> None:
    model = make_model(unfreeze_at_epoch=1, unfreeze_stages=1, backbone_lr=3e-4, lr=1e-2)
    lower = {k: v for k, v in snapshot(model.backbone).items() if not k.startswith("layer4.")}
    start = snapshot(model.backbone.layer4)
    probe = GroupProbe()
    trainer = fit(model, epochs=3, callbacks=[probe])
    # layer4 without its BatchNorm layers (bn_policy=frozen keeps them fixed): 2 blocks x 2 convs + downsample
    layer4 = [
        p for n, p in model.backbone.layer4.named_parameters() if "bn" not in n and "downsample.1" not in n
    ]
    assert len(layer4) == 5
    head_only = [("head", 1e-2, 2)]
    joined = [*head_only, ("backbone", 3e-4, 5)]
    assert probe.groups == [head_only, joined, joined]
    assert optimizer_params(trainer) == {id(p) for p in [*model.head.parameters(), *layer4]}
    epoch0, epoch1, epoch2 = probe.layer4
    convs = [k for k in start if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    assert all(torch.equal(start[k], epoch0[k]) for k in start)
    assert all(not torch.equal(epoch0[k], epoch1[k]) and not torch.equal(epoch1[k], epoch2[k]) for k in convs)
    # the layers below layer4, and every BatchNorm weight and statistic, are as they were
    after = model.backbone.state_dict()
    assert all(torch.equal(value, after[name]) for name, value in lower.items())
    assert all(torch.equal(start[k], epoch2[k]) for k in start if "bn" in k or "downsample.1" in k)


def test_unfreezing_all_stages_under_bn_policy_train() -> None:
    model = make_model(unfreeze_at_epoch=0, unfreeze_stages=5, bn_policy="train", backbone_lr=1e-3)
    trainer = fit(model, epochs=1, limit_train_batches=1)
    names = [g["name"] for g in trainer.optimizers[0].param_groups]
    assert names == ["head", "backbone"]
    assert optimizer_params(trainer) == {id(p) for p in model.parameters()}


def test_channels_last_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    plain = make_model().eval()
    fast = make_model(channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(3, 1, SIZE, SIZE)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    fit(fast.train(), epochs=1, limit_train_batches=1)


@pytest.mark.parametrize(("arch", "width"), [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_head_width_comes_from_the_backbone(arch: str, width: int) -> None:
    model = TransferLearner(
        num_classes=7, image_shape=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3, arch=arch
    )
    assert model.head[-1].in_features == width and model.head[-1].out_features == 7
    assert model(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 7)
    assert build_backbone(arch)[1] == width


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"weights": "IMAGENET1K_V9"},
            "resnet18 has no weights called IMAGENET1K_V9: use one of IMAGENET1K_V1, DEFAULT",
        ),
        ({"unfreeze_stages": 6}, "unfreeze_stages must be"),
        ({"unfreeze_at_epoch": -1}, "unfreeze_at_epoch must be"),
        ({"image_shape": (2, SIZE, SIZE), "mean": (0.1, 0.1), "std": (0.2, 0.2)}, "grey or RGB"),
        ({"backbone_lr": 0.0}, "lr and backbone_lr must be > 0"),
    ],
)
def test_bad_hyperparameters_name_the_fix(overrides: dict[str, Any], message: str) -> None:
    """What the types cannot say; an ``arch`` or ``bn_policy`` its Literal does not list is the CLI parser's
    to refuse (test_transfer_cli.py)."""
    with pytest.raises(UserError, match=message):
        make_model(**overrides)


@pytest.mark.gpu
def test_bf16_channels_last_on_the_gpu_keeps_the_frozen_backbone_bit_identical() -> None:
    class Layout(pl.Callback):  # where the weights are while training (fit moves them back to the CPU)
        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: TransferLearner, *args: Any) -> None:
            weight = pl_module.backbone.conv1.weight
            self.seen = (weight.is_cuda, weight.is_contiguous(memory_format=torch.channels_last))

    model, layout = make_model(channels_last=True), Layout()
    backbone = snapshot(model.backbone)
    fit(model, epochs=1, accelerator="gpu", precision="bf16-mixed", callbacks=[layout])
    assert layout.seen == (True, True)
    after = model.backbone.state_dict()
    assert all(torch.equal(value, after[name].cpu()) for name, value in backbone.items())
