"""The sample score judges the data it is given: digits, MNIST-shaped and CIFAR-shaped images alike."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from sklearn.linear_model import LogisticRegression
from torch.utils.data import DataLoader, TensorDataset

from datamodules import DigitsDataModule, MNISTDataModule
from datamodules.mnist import PACKAGED
from systems.gan import GAN
from systems.gan.callbacks import SampleQuality, verdict
from systems.gan.train import main
from tests.datamodules.test_mnist import write_idx
from tests.helpers import QUIET, ROOT, real_data

# the judge's accuracy on the training images it did not see, for these data (measured: 0.99, 0.98, 0.96)
JUDGE_FLOOR = 0.9


class _Images(pl.LightningDataModule):
    """Labelled images held in memory: train, val and test splits of a given set."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        self.splits = {
            name: (images[part], labels[part])
            for name, part in zip(("train", "val", "test"), order.tensor_split((1200, 1500)), strict=True)
        }

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*self.splits["train"]), batch_size=64)


def digits(side: int | None = None, colour: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    data = DigitsDataModule(image_size=side, value_range=(-1.0, 1.0), val_fraction=0.0, test_fraction=0.0)
    data.setup()
    images, labels = (torch.stack(column) for column in zip(*data.train_set, strict=True))
    if colour:  # a random tint per image: the judge must read the shape, not the colour
        tint = torch.rand(len(images), 3, 1, 1, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.2
        images = (images + 1) * tint - 1
    return images, labels


def mnist_shaped(folder: Path) -> MNISTDataModule:
    """The bundled digits at 28 px in MNIST's own idx files, read through the project's MNISTDataModule."""
    images, labels = digits(28)
    pixels = ((images[:, 0] + 1) * 127.5).round().to(torch.uint8)
    write_idx(folder / "MNIST/raw", "train", pixels[:1500], labels[:1500])
    write_idx(folder / "MNIST/raw", "t10k", pixels[1500:], labels[1500:])
    data = MNISTDataModule(data_dir=str(folder), download=False, value_range=(-1.0, 1.0), val_size=300)
    data.setup("fit")
    return data


def score(quality: SampleQuality, real: torch.Tensor, images: torch.Tensor) -> float:
    """The Fréchet distance between ``images`` and ``real`` in the judge's features."""
    quality.fid.reset()
    quality.fid.update(real, real=True)
    quality.fid.update(images, real=False)
    return quality.fid.compute().item()


def judged(data: pl.LightningDataModule) -> SampleQuality:
    quality = SampleQuality()
    quality.setup(SimpleNamespace(datamodule=data), None, "fit")
    return quality


@pytest.mark.parametrize("shape", ["digits", "mnist", "colour"])
def test_the_judge_learns_the_data_and_scores_real_images_far_above_noise_and_an_untrained_generator(
    shape: str, tmp_path: Path
) -> None:
    if shape == "mnist":
        data = mnist_shaped(tmp_path)
        real, test = (torch.stack([s[0] for s in split]) for split in (data.val_set, data.test_set))
    else:
        data = _Images(*digits(*((None, False) if shape == "digits" else (32, True))))
        real, test = data.splits["val"][0], data.splits["test"][0]
    quality = judged(data)
    assert quality.accuracy >= JUDGE_FLOOR
    untrained = GAN(image_shape=tuple(real.shape[1:]), judge=False).sample(len(test))
    noise = torch.rand(test.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real_fd = score(quality, real, test)
    assert 10 * real_fd < min(score(quality, real, noise), score(quality, real, untrained))
    sure = verdict(quality.judge(test).softmax(1))
    assert sure["judge_classes"] == 10 and sure["judge_confidence"] > 0.9


def test_on_mnist_shaped_data_the_judge_reads_digits_as_an_outside_classifier_does(tmp_path: Path) -> None:
    """The 8x8 judge this replaces called 89% of real MNIST digits "4"; this one is trained on the data."""
    data = mnist_shaped(tmp_path)
    quality = judged(data)
    train = torch.stack([s[0] for s in data.train_set]).flatten(1)
    outside = LogisticRegression(max_iter=2000).fit(train.numpy(), [int(s[1]) for s in data.train_set])
    test = torch.stack([s[0] for s in data.test_set])
    ours, theirs = quality.judge(test).argmax(1).numpy(), outside.predict(test.flatten(1).numpy())
    assert (ours == theirs).mean() > 0.9
    assert len(set(ours)) == len(set(theirs)) == 10


@pytest.mark.slow
def test_on_fashion_mnist_150_batches_draw_what_the_judge_finds_nearer_the_real_images_than_untrained() -> (
    None
):
    real_data(PACKAGED["fashion_mnist"], "apt-get install dataset-fashion-mnist")
    fashion = ["--config", str(ROOT / "systems/gan/config_fashion.yaml"), *QUIET, "--trainer.max_epochs=1"]
    cli = main(["fit", *fashion, "--trainer.limit_train_batches=150", "--trainer.limit_val_batches=8"])
    quality = next(c for c in cli.trainer.callbacks if isinstance(c, SampleQuality))
    assert quality.accuracy >= 0.7  # the judge on Fashion-MNIST images it did not see (measured 0.78)
    real, test = (
        torch.stack([s[0] for s in split][:512])
        for split in (cli.datamodule.val_set, cli.datamodule.test_set)
    )
    trained = cli.model.sample(512, generator=torch.Generator().manual_seed(1))
    untrained = GAN(image_shape=(1, 28, 28), width=16, judge=False).sample(512)
    fd = {
        name: score(quality, real, x)
        for name, x in (("real", test), ("trained", trained), ("untrained", untrained))
    }
    assert fd["real"] < fd["trained"] < fd["untrained"] / 3  # measured: 3.0, 44 and 774


def test_without_labels_nothing_is_scored_or_monitored() -> None:
    class _Unlabelled(pl.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            return DataLoader(torch.rand(32, 1, 8, 8) * 2 - 1, batch_size=8)

    quality = judged(_Unlabelled())
    assert quality.judge is None and quality.fid is None


def test_scoring_leaves_the_global_random_state_alone() -> None:
    data = _Images(*digits())
    module = GAN(judge=False)
    before = torch.get_rng_state()
    quality = judged(data)
    fake = module.sample(64, generator=torch.Generator().manual_seed(1))
    score(quality, data.splits["val"][0], fake)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_score_lands_in_the_metrics_and_the_judges_accuracy_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    short = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.check_val_every_n_epoch=1",
    ]
    cli = main(["fit", *QUIET, "--model.width=8", *short, "--test_after_fit=false"])
    metrics = cli.trainer.callback_metrics
    assert {"val/fd", "val/judge_score", "val/judge_confidence", "val/judge_classes"} <= metrics.keys()
    assert "Sample score: a judge trained on 1,133 training images recognises" in caplog.text
