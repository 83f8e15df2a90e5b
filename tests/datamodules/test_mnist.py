"""MNISTDataModule on small files in the real idx format, read by torchvision's own code path."""

from __future__ import annotations

import gzip
import struct
import time
from pathlib import Path

import pytest
import torch
from torchvision.datasets import MNIST

from datamodules import MNISTDataModule, mnist
from shared.errors import UserError


def write_idx(folder: Path, prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Write ``<prefix>-images-idx3-ubyte`` and ``<prefix>-labels-idx1-ubyte`` as LeCun's format defines."""
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">iiii", 0x803, n, rows, cols) + images.to(torch.uint8).numpy().tobytes()
    )
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">ii", 0x801, n) + labels.to(torch.uint8).numpy().tobytes()
    )


def fake_mnist(root: Path, folder_name: str = "MNIST", n_train: int = 60, n_test: int = 20) -> torch.Tensor:
    """Small MNIST-shaped files whose image i is filled with the value i (so tests can trace items)."""
    raw = root / folder_name / "raw"
    train = torch.arange(n_train).view(-1, 1, 1).expand(n_train, 28, 28)
    write_idx(raw, "train", train, torch.arange(n_train) % 10)
    write_idx(raw, "t10k", torch.full((n_test, 28, 28), 255), torch.arange(n_test) % 10)
    return train


def test_reads_the_idx_files_through_torchvision(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "data")
    data = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, batch_size=8, val_size=10)
    data.prepare_data()
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (50, 10, 20)
    x, y = next(iter(data.test_dataloader()))
    assert x.shape == (8, 1, 28, 28) and torch.all(x == 1.0)
    assert y.tolist() == list(range(8))
    train_pixels = sorted(round(float(x[0, 0, 0]) * 255) for x, _ in data.train_set)
    val_pixels = sorted(round(float(x[0, 0, 0]) * 255) for x, _ in data.val_set)
    assert sorted(train_pixels + val_pixels) == list(range(60))


def test_fashion_mnist_resized_to_32_in_minus_one_to_one(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "data", folder_name="FashionMNIST")
    data = MNISTDataModule(
        dataset="fashion_mnist",
        data_dir=str(tmp_path / "data"),
        download=False,
        image_size=32,
        value_range=(-1.0, 1.0),
        val_size=10,
    )
    data.setup("fit")
    x, _ = data.test_set[0]
    assert data.dims == (1, 32, 32) and x.shape == (1, 32, 32)
    assert torch.allclose(x, torch.ones_like(x))
    assert data.mean == pytest.approx((2 * 0.2860 - 1,))


def test_fashion_mnist_is_read_offline_from_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dataset-fashion-mnist's four .gz files, where Debian puts them: unpacked into data_dir, nothing downloaded."""
    packaged = tmp_path / "usr/share/datasets/fashion-mnist"
    fake_mnist(tmp_path / "plain", folder_name="FashionMNIST")
    packaged.mkdir(parents=True)
    for path in (tmp_path / "plain/FashionMNIST/raw").iterdir():
        (packaged / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    monkeypatch.setattr(mnist, "PACKAGED", {"fashion_mnist": packaged})
    data = MNISTDataModule(
        dataset="fashion_mnist", data_dir=str(tmp_path / "data"), download=False, val_size=10
    )
    data.prepare_data()
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (50, 10, 20)
    assert sorted(p.name for p in data.raw_folder.iterdir()) == sorted(p.stem for p in packaged.iterdir())


def test_without_the_package_fashion_mnist_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist, "PACKAGED", {"fashion_mnist": tmp_path / "not-installed"})
    data = MNISTDataModule(dataset="fashion_mnist", data_dir=str(tmp_path / "data"), download=False)
    with pytest.raises(
        UserError, match=r"install Debian's dataset-fashion-mnist \(`apt-get install dataset-"
    ):
        data.prepare_data()


def test_missing_files_without_download_name_the_fix(tmp_path: Path) -> None:
    data = MNISTDataModule(data_dir=str(tmp_path / "nothing"), download=False)
    with pytest.raises(UserError, match=r"Put the four idx files there .*DigitsDataModule"):
        data.prepare_data()
    with pytest.raises(UserError, match="not in"):
        data.setup("fit")


def test_offline_download_fails_fast_with_one_sentence_and_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an address that nothing answers: without the timeout, connect() would wait for minutes
    monkeypatch.setattr(MNIST, "mirrors", ["http://10.255.255.1/mnist/"])
    data = MNISTDataModule(data_dir=str(tmp_path / "data"), download_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"could not be downloaded \(no network\?") as refusal:
        data.prepare_data()
    assert time.monotonic() - start < 15
    assert "\n" not in str(refusal.value) and "Tried" not in str(
        refusal.value
    )  # torchvision's story: its cause
    assert "Tried http://10.255.255.1/mnist/" in str(refusal.value.__cause__)
    assert not (tmp_path / "data").exists()


def test_the_gz_files_alone_are_unpacked_and_read(tmp_path: Path) -> None:
    train = fake_mnist(tmp_path / "data")
    raw = tmp_path / "data/MNIST/raw"
    for path in list(raw.iterdir()):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    data = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, val_size=10)
    data.prepare_data()
    data.setup("fit")
    assert len(data.train_set) + len(data.val_set) == len(train)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate_images", r"train-images-idx3-ubyte holds 35,216 bytes where its header \(60 x 28 x 28\)"),
        ("garbage_labels", r"train-labels-idx1-ubyte is not an idx file"),
        ("fewer_labels", r"holds 60 images but 50 labels"),
    ],
)
def test_a_damaged_idx_file_is_named(tmp_path: Path, damage: str, message: str) -> None:
    fake_mnist(tmp_path / "data")
    raw = tmp_path / "data/MNIST/raw"
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    if damage == "truncate_images":
        images.write_bytes(images.read_bytes()[:35216])
    elif damage == "garbage_labels":
        labels.write_bytes(bytes(range(200)))
    else:
        labels.write_bytes(struct.pack(">ii", 0x801, 50) + bytes(50))  # a whole file of another set
    data = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, val_size=10)
    with pytest.raises(UserError, match=message):
        data.setup("fit")


def test_a_validation_split_larger_than_the_file_is_refused_with_the_sizes(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "data", n_train=40)
    data = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, val_size=50)
    with pytest.raises(UserError, match=r"val_size=50 leaves none of the 40 training images .*below 40"):
        data.setup("fit")


def test_train_fraction_takes_its_share_of_the_training_split_the_classes_taking_turns(
    tmp_path: Path,
) -> None:
    """200 images, 100 held out: 10% is 10 training images, one of each class, the same in every datamodule with
    the seed, a subset of 30%'s; validation and test stay whole."""
    fake_mnist(tmp_path / "data", n_train=200)

    def pixels(fraction: float, seed: int = 42) -> tuple[list[int], list[int], list[int]]:
        data = MNISTDataModule(
            data_dir=str(tmp_path / "data"), download=False, val_size=100, train_fraction=fraction, seed=seed
        )
        data.setup("fit")
        train = [round(float(x[0, 0, 0]) * 255) for x, _ in data.train_set]
        assert [y for _, y in data.train_set] == [value % 10 for value in train]  # image i has label i % 10
        val = sorted(round(float(x[0, 0, 0]) * 255) for x, _ in data.val_set)
        return train, val, [y for _, y in data.train_set]

    tenth, val, labels = pixels(0.1)
    assert len(tenth) == 10 and sorted(labels) == list(range(10))
    assert pixels(0.1) == (tenth, val, labels)  # deterministic
    third, third_val, third_labels = pixels(0.3)
    assert len(third) == 30 and set(tenth) <= set(third) and third_val == val
    assert all(third_labels.count(label) == 3 for label in range(10))
    assert pixels(1.0)[1] == val and len(pixels(1.0)[0]) == 100
    assert set(pixels(0.1, seed=7)[0]) != set(tenth)


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_a_train_fraction_outside_0_to_1_is_refused(fraction: float) -> None:
    with pytest.raises(UserError, match=r"train_fraction must be in \(0, 1\]"):
        MNISTDataModule(train_fraction=fraction)
