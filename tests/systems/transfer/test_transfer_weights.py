"""Where the backbone's starting weights come from: torchvision names (cached, or offline with a fast clear
error), local files in three formats, and checkpoints that never need the original weights again."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

import systems.transfer.weights as transfer_weights
from datamodules import DigitsDataModule
from shared.errors import UserError
from systems.transfer import TransferLearner
from systems.transfer.model import build_backbone
from systems.transfer.train import main as train
from systems.transfer.weights import cached_file, read_backbone_state
from tests.helpers import QUIET, refused

SIZE = 16


def make_model(**overrides: Any) -> TransferLearner:
    return TransferLearner(num_classes=5, image_shape=(1, SIZE, SIZE), **overrides)


def random_resnet18_state(seed: int, with_classifier: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict shaped like torchvision's resnet18 file, with random values (and random statistics)."""
    torch.manual_seed(seed)
    backbone, width = build_backbone("resnet18")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in backbone.state_dict().items()}
    if with_classifier:
        state |= {"fc.weight": torch.randn(1000, width), "fc.bias": torch.randn(1000)}
    return state


def assert_backbone_equals(model: TransferLearner, state: dict[str, torch.Tensor]) -> None:
    loaded = model.backbone.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network (every host name fails to resolve, as offline) and an empty torch hub cache; returns it."""

    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_torchvision_name_offline_fails_fast_with_the_fix(offline: Path) -> None:
    model = make_model(weights="IMAGENET1K_V1")
    start = time.monotonic()
    with pytest.raises(UserError) as error:
        model.load_pretrained()
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "could not be downloaded (no network?" in message
    assert str(offline / "resnet18-f37072fd.pth") in message and "--model.weights=PATH" in message
    assert message.count(". ") == 0  # one sentence


def test_torchvision_name_offline_stops_the_cli_within_seconds(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = time.monotonic()
    err = refused(capsys, train, ["fit", *QUIET, "--model.weights=IMAGENET1K_V1", "--trainer.max_epochs=1"])
    assert "could not be downloaded" in err
    assert time.monotonic() - start < 20  # building the CLI included; the network part fails at once
    assert not Path("lightning_logs").exists()


@pytest.fixture
def black_hole(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every host resolves to a local port that accepts connections and never answers: a dropped network."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    address = server.getsockname()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address)]
    )
    yield
    stop.set()
    thread.join()
    for connection in [*accepted, server]:
        connection.close()


def test_a_stalled_download_is_bounded_by_the_socket_timeout(
    black_hole: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(transfer_weights, "DOWNLOAD_TIMEOUT_S", 1.0)
    model = make_model(weights="IMAGENET1K_V1")
    start = time.monotonic()
    with pytest.raises(UserError, match=r"could not be downloaded .*timed out"):
        model.load_pretrained()
    assert time.monotonic() - start < 10
    assert socket.getdefaulttimeout() is None  # the bound is lifted again afterwards


def test_torchvision_name_reads_the_hub_cache_offline(offline: Path) -> None:
    state = random_resnet18_state(1, with_classifier=True)
    file = cached_file("resnet18", "IMAGENET1K_V1")
    assert file == offline / "resnet18-f37072fd.pth"
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    model = make_model(weights="DEFAULT")
    model.load_pretrained()
    assert_backbone_equals(model, state)


def test_weight_files_in_three_formats(tmp_path: Path) -> None:
    state = random_resnet18_state(2, with_classifier=True)
    torch.save(state, tmp_path / "torchvision.pth")
    backbone_only = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(backbone_only, tmp_path / "backbone.pt")
    checkpoint = {
        "state_dict": {f"backbone.{k}": v for k, v in backbone_only.items()}
        | {"head.1.bias": state["fc.bias"]}
    }
    torch.save(checkpoint, tmp_path / "system.ckpt")
    for name in ("torchvision.pth", "backbone.pt", "system.ckpt"):
        assert set(read_backbone_state(tmp_path / name)) == set(backbone_only)
        model = make_model(weights=str(tmp_path / name))
        model.load_pretrained()
        assert_backbone_equals(model, backbone_only)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.save(random_resnet18_state(3), tmp_path / "backbone.pt")
    model = make_model(arch="resnet50", weights=str(tmp_path / "backbone.pt"))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with pytest.raises(UserError, match=r"do not fit a resnet50 backbone .*set model\.arch"):
        model.load_pretrained()
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in before.items())
    (tmp_path / "junk.pt").write_bytes(b"not a weight file")
    with pytest.raises(
        UserError, match=r"junk\.pt is not a weight file: it is not a file that torch\.save writes"
    ):
        read_backbone_state(tmp_path / "junk.pt")


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_a_weight_file_with_code_in_it_is_refused_without_advice_to_run_it(tmp_path: Path) -> None:
    torch.save({"conv1.weight": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError) as error:
        read_backbone_state(tmp_path / "evil.pt")
    assert "holds Python objects" in str(error.value) and "weights_only" not in str(error.value)


def test_missing_file_says_run_pretrain_first() -> None:
    with pytest.raises(UserError, match=r"run `python -m systems.transfer.pretrain` first"):
        make_model(weights="lightning_logs/transfer/pretrain/backbone.pt").load_pretrained()


def fit_once(model: TransferLearner, **trainer: Any) -> pl.Trainer:
    data = DigitsDataModule(batch_size=8, image_size=SIZE, classes=[5, 6, 7, 8, 9])
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer,
    )
    trainer.fit(model, data)
    return trainer


def test_fit_loads_the_weights_and_checkpoints_never_need_them_again(tmp_path: Path) -> None:
    state = random_resnet18_state(4)
    torch.save(state, tmp_path / "backbone.pt")
    model = make_model(weights=str(tmp_path / "backbone.pt"))
    assert not model.weights_loaded  # building the module reads nothing
    trainer = fit_once(model, default_root_dir=tmp_path)
    assert_backbone_equals(model, state)  # frozen: exactly the file's weights after training
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    (tmp_path / "backbone.pt").unlink()
    restored = TransferLearner.load_from_checkpoint(path)
    assert restored.weights_loaded and restored.hparams.weights == str(tmp_path / "backbone.pt")
    assert_backbone_equals(restored, state)
    # and fitting it further starts from the checkpoint, without looking for the file
    fit_once(restored, default_root_dir=tmp_path)
