"""CIFAR10DataModule on small files that the test writes in the real on-disk format.

The python version of CIFAR-10 is ``cifar-10-batches-py/`` holding pickled dicts: five training batches
and a test batch (``data``: uint8 rows of 3072 values, the red, green and blue planes of a 32x32 image in
turn; ``labels``: ints) and ``batches.meta`` (``label_names``). torchvision's ``CIFAR10`` checks the md5 of
every batch file and of ``batches.meta`` against the digests of the real files before it reads anything;
the tests swap in the digests of the files they write, so that the real check runs on them.
"""

from __future__ import annotations

import hashlib
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10

from datamodules import CIFAR10DataModule
from shared.errors import UserError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 6  # images per file: 30 training images, 6 test images


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Write a small CIFAR-10 into ``root`` and make torchvision expect exactly these files."""
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for index, (name, _) in enumerate(CIFAR10.train_list + CIFAR10.test_list):
        batch = {
            "batch_label": name,
            "data": rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8),
            "labels": [(index * PER_BATCH + i) % 10 for i in range(PER_BATCH)],
            "filenames": [f"{name}_{i}.png" for i in range(PER_BATCH)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    meta = {"label_names": NAMES, "num_cases_per_batch": PER_BATCH, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    monkeypatch.setattr(CIFAR10, "train_list", [[n, _md5(folder / n)] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, _md5(folder / n)] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    return batches


def test_reads_the_real_format_through_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = write_cifar(tmp_path / "data", monkeypatch)
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "data"), val_size=5, batch_size=4, shuffle=False)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (25, 5, 6)
    assert dm.num_classes == 10 and dm.dims == (3, 32, 32) and len(dm.mean) == 3
    image, label = dm.test_set[1]
    row = batches["test_batch"]["data"][1]
    # the row is three 32x32 planes (R, G, B), each row-major: the same layout as a (3, 32, 32) tensor
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert torch.equal(image, torch.from_numpy(row.reshape(3, 32, 32)).float() / 255.0)
    assert label == batches["test_batch"]["labels"][1]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.long


def test_classes_resize_and_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path / "data", monkeypatch)
    dm = CIFAR10DataModule(
        data_dir=str(tmp_path / "data"), val_size=2, classes=[9, 1], image_size=48, value_range=(-1.0, 1.0)
    )
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.dims == (3, 48, 48)
    # labels 1 and 9 of the 30 training images (3 of each) become 1 and 0, in the given order
    train = [dm.train_set[i] for i in range(len(dm.train_set))] + [
        dm.val_set[i] for i in range(len(dm.val_set))
    ]
    assert sorted(int(y) for _, y in train) == [0, 0, 0, 1, 1, 1]
    assert all(x.shape == (3, 48, 48) and x.min() >= -1 and x.max() <= 1 for x, _ in train)
    # the test batch holds labels 0-5: of the kept classes only one image of class 1
    assert [int(y) for _, y in (dm.test_set[i] for i in range(len(dm.test_set)))] == [1]


def test_corrupt_file_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path / "data", monkeypatch)
    batch = tmp_path / "data" / CIFAR10.base_folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "data"), val_size=2)
    with pytest.raises(UserError, match=r"fail torchvision's md5 check.*download it again"):
        dm.setup("fit")


def test_offline_download_fails_fast_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a port nothing listens on: the download is refused at once, as it is with no network
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(CIFAR10, "url", f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "data"), download_timeout=2.0)
    with pytest.raises(UserError, match=r"could not be downloaded.*--data=datamodules\.DigitsDataModule"):
        dm.prepare_data()
    assert not (tmp_path / "data").exists()  # the failed download leaves no empty folders
    with pytest.raises(UserError, match="download is off"):
        CIFAR10DataModule(data_dir=str(tmp_path / "data"), download=False).prepare_data()
    with pytest.raises(UserError, match="prepare_data has not downloaded it"):
        dm.setup("fit")


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(UserError, match="distinct class indices"):
        CIFAR10DataModule(classes=[1, 1])
    with pytest.raises(UserError, match="batch_size"):
        CIFAR10DataModule(batch_size=0)
