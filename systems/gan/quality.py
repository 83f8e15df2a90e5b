"""The GAN's sample-quality score: a small frozen digits "judge", what it measures, the callback that logs it.

There is no Inception network offline, so a classifier of the bundled 8x8 digits plays its part: the
Fréchet distance between real and generated images in the judge's hidden features (FID's recipe in a
smaller space), and the judge's verdict on the samples (how sure it is, how many digits it sees, and
the Inception-score-like ``exp(E[KL(p(y|x) || p(y))])`` that combines both, from 1 to 10).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import nn

from datamodules import DigitsDataModule


class DigitsJudge(nn.Module):
    """A small classifier of 8x8 grey digits in [-1, 1]; larger images are shrunk to 8x8 first (area mean).

    ``features`` is the hidden layer in which the Fréchet distance is measured; ``forward`` gives logits.
    """

    side = 8

    def __init__(self, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.side * self.side, 128),
            nn.ReLU(),
            nn.Linear(128, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.side:
            images = F.adaptive_avg_pool2d(images, self.side)
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_judge(images: torch.Tensor, labels: torch.Tensor, seed: int = 0, steps: int = 300) -> DigitsJudge:
    """Fit a ``DigitsJudge`` on ``(N, 1, 8, 8)`` images in [-1, 1] (full-batch Adam, about a second on a CPU)
    and return it frozen in eval mode.

    It draws from a forked random state seeded with ``seed``: the same judge every time, and the global
    random state (the GAN's noise, restored on resume) is left exactly as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = DigitsJudge()
        optimizer = torch.optim.Adam(judge.parameters(), lr=3e-3, weight_decay=1e-4)
        for _ in range(steps):
            loss = F.cross_entropy(judge(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return judge.eval().requires_grad_(False)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and of ``b`` (computed in float64):
    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)``. 0 for identical statistics.
    """
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _psd_sqrt(cov_a)
    cross = _psd_sqrt(root_a @ cov_b @ root_a)
    return (a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross.trace()


def verdict(probs: torch.Tensor, min_share: float = 0.05) -> dict[str, torch.Tensor]:
    """What the judge's class probabilities ``(N, classes)`` say about a set of samples.

    - ``judge_score``: ``exp(mean KL(p(y|x) || p(y)))``, 1 (all alike or all unsure) to the number of
      classes (every sample sure of its class, all classes equally often);
    - ``judge_confidence``: mean probability of the chosen class;
    - ``judge_classes``: classes chosen for at least ``min_share`` of the samples (mode coverage).
    """
    probs = probs.double()
    marginal = probs.mean(0, keepdim=True)
    kl = (probs * (probs.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)
    votes = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double() / probs.shape[0]
    return {
        "judge_score": kl.mean().exp(),
        "judge_confidence": probs.max(1).values.mean(),
        "judge_classes": (votes >= min_share).sum().double(),
    }


class SampleQuality(Callback):
    """At every validation, score ``samples`` generated images against the real validation images and log
    ``val/fd`` (lower is better; the checkpoint callback keeps the best), ``val/judge_score``,
    ``val/judge_confidence`` and ``val/judge_classes``.

    The judge is trained once when the run starts (about a second, seeded, in a forked random state so the
    GAN's noise is untouched). The generated images come from fixed latents of a private generator: the
    same every time, and the global random state is left alone. Under DDP each process sees its own shard
    of the real images; they are gathered, so every process computes the same scores.
    """

    def __init__(self, samples: int = 512) -> None:
        self.samples = samples
        self.judge: DigitsJudge | None = None
        self.real: list[torch.Tensor] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.judge is None:
            digits = DigitsDataModule(value_range=(-1.0, 1.0))
            digits.setup()
            pairs = [digits.train_set[i] for i in range(len(digits.train_set))]
            images, labels = (torch.stack(column) for column in zip(*pairs, strict=True))
            self.judge = train_judge(images, labels)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.judge.to(pl_module.device)
        self.real.clear()

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        if not trainer.sanity_checking:
            self.real.append(self.judge.features(batch[0]).float())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.real:
            return
        real = pl_module.all_gather(torch.cat(self.real)).flatten(0, -2)
        self.real.clear()
        fake = pl_module.sample(self.samples, generator=torch.Generator().manual_seed(1))
        fake_features = self.judge.features(fake).float()
        scores = {"fd": frechet_distance(fake_features, real)}
        scores.update(verdict(self.judge.head(fake_features).softmax(1)))
        # every process computed the same scores from the gathered features: syncing only averages equals
        pl_module.log_dict({f"val/{name}": value.float() for name, value in scores.items()}, sync_dist=True)
