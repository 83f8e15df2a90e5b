"""DigitsDataModule(half=...): two runs that take one half each never share an image."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from datamodules import DigitsDataModule


def all_images(dm: DigitsDataModule) -> list[tuple[bytes, int]]:
    dm.setup("fit")
    splits = (dm.train_set, dm.val_set, dm.test_set)
    return sorted(
        (split[i][0].numpy().tobytes(), int(split[i][1])) for split in splits for i in range(len(split))
    )


def test_the_halves_split_the_images_in_scikit_learns_order() -> None:
    digits = load_digits()
    middle = len(digits.target) // 2
    expected = {
        half: sorted(
            ((torch.from_numpy(image).float().unsqueeze(0) / 16.0).numpy().tobytes(), int(label))
            for image, label in zip(digits.images[part], digits.target[part], strict=True)
        )
        for half, part in (("first", slice(0, middle)), ("second", slice(middle, None)))
    }
    first, second = all_images(DigitsDataModule(half="first")), all_images(DigitsDataModule(half="second"))
    assert first == expected["first"] and second == expected["second"]
    assert len(first) + len(second) == len(all_images(DigitsDataModule())) == len(digits.target)


def test_half_combines_with_classes() -> None:
    dm = DigitsDataModule(half="second", classes=[5, 6, 7, 8, 9], val_fraction=0.2, test_fraction=0.5)
    images = all_images(dm)
    middle = len(load_digits().target) // 2
    assert len(images) == int(
        torch.isin(torch.from_numpy(load_digits().target[middle:]), torch.arange(5, 10)).sum()
    )
    assert {label for _, label in images} == {0, 1, 2, 3, 4}
