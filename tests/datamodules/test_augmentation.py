"""``augment``: transforms.v2 pipelines on the training batches only, each image its own draw, from the global random
state (which every checkpoint holds: the exact resume test is in tests/shared/test_interruptions.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from datamodules import CIFAR10DataModule, DigitsDataModule, MNISTDataModule


def augmented(data: object, batch: tuple[torch.Tensor, torch.Tensor], training: bool = True) -> torch.Tensor:
    """What the Trainer's hook makes of ``batch`` during training (or evaluation)."""
    data.trainer = SimpleNamespace(training=training)  # what the hook reads of the Trainer
    images, labels = data.on_before_batch_transfer(batch, 0)
    assert torch.equal(labels, batch[1])
    return images


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: DigitsDataModule(augment=True), (1, 8, 8)),
        (lambda: MNISTDataModule(augment=True, value_range=(-1.0, 1.0)), (1, 28, 28)),
        (lambda: CIFAR10DataModule(augment=True), (3, 32, 32)),
    ],
)
def test_augment_changes_each_training_image_on_its_own_and_leaves_evaluation_alone(
    make: object, shape: tuple
) -> None:
    data = make()
    low, high = data.value_range
    image = torch.rand(shape) * (high - low) + low
    batch = (image.expand(16, *shape).clone(), torch.arange(16))
    torch.manual_seed(0)
    images = augmented(data, batch)
    assert images.shape == batch[0].shape and images.dtype == torch.float32
    assert len({bytes(x.numpy()) for x in images}) > 8  # sixteen copies of one image, drawn one by one
    assert images.min() >= low - 1e-6 and images.max() <= high + 1e-6
    assert torch.equal(augmented(data, batch, training=False), batch[0])  # validation, test, predict


def test_the_draws_come_from_the_global_random_state() -> None:
    data, batch = DigitsDataModule(augment=True), (torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    torch.manual_seed(3)
    first = augmented(data, batch)
    torch.manual_seed(3)
    assert torch.equal(augmented(data, batch), first)
    assert not torch.equal(augmented(data, batch), first)


def test_without_augment_the_training_batches_pass_unchanged() -> None:
    batch = (torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    assert augmented(DigitsDataModule(), batch) is batch[0]
