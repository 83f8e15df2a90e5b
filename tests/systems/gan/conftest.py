"""What the GAN tests share: small, fast flags and a recorder of which network each batch changed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from systems.gan import GAN
from systems.gan.train import main
from tests.helpers import QUIET

# a small GAN without the judge or validation: the tests of the training loop need neither
FAST = [
    *QUIET,
    "--model.width=8",
    "--model.latent_dim=16",
    "--model.judge=false",
    "--trainer.limit_val_batches=0",
    "--test_after_fit=false",
]


def _snapshot(net: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    params = list(net.parameters())
    return [p.detach().clone() for p in params], [None if p.grad is None else p.grad.clone() for p in params]


def _same(a: list[torch.Tensor | None], b: list[torch.Tensor | None]) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
        for x, y in zip(a, b, strict=True)
    )


class StepRecorder(pl.Callback):
    """Writes ``D`` or ``G`` per batch for the network whose weights the batch changed (``DG`` for both,
    ``-`` for neither), and lists every batch where the other network's weights or ``.grad`` moved."""

    def __init__(self) -> None:
        self.trace = ""
        self.violations: list[str] = []
        self._before: dict[str, tuple[list[torch.Tensor], list[torch.Tensor | None]]] = {}

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: GAN, batch: object, batch_idx: int
    ) -> None:
        self._before = {"D": _snapshot(pl_module.discriminator), "G": _snapshot(pl_module.generator)}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: GAN, outputs: object, batch: object, batch_idx: int
    ) -> None:
        after = {"D": _snapshot(pl_module.discriminator), "G": _snapshot(pl_module.generator)}
        stepped = "".join(net for net in "DG" if not _same(self._before[net][0], after[net][0]))
        self.trace += stepped or "-"
        grads = [net for net in "DG" if not _same(self._before[net][1], after[net][1])]
        # a step the 16-mixed GradScaler skipped changed no weights but its own network's .grad
        for net in "DG" if stepped or len(grads) > 1 else ():
            if net not in stepped and net in grads:
                self.violations.append(
                    f"batch {len(self.trace) - 1}: {net}.grad changed during a {stepped} step"
                )


@pytest.fixture
def fast() -> list[str]:
    """``FAST``: flags for a small GAN without the judge or validation."""
    return list(FAST)


@pytest.fixture
def fit_recorded() -> Callable[..., tuple[pl.LightningModule, pl.Trainer, StepRecorder]]:
    """Build the GAN through the CLI with ``flags`` (after ``FAST``); fit it with a ``StepRecorder`` on."""

    def fit(
        *flags: str, ckpt_path: str | None = None, callbacks: list[pl.Callback] = ()
    ) -> tuple[GAN, pl.Trainer, StepRecorder]:
        cli = main([*FAST, *flags], run=False)
        recorder = StepRecorder()
        cli.trainer.callbacks.extend([recorder, *callbacks])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
        return cli.model, cli.trainer, recorder

    return fit
