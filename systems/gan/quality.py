"""Plain torch: an offline sample-quality score, a small frozen digits "judge" and what it measures.

There is no Inception network offline, so a classifier of the bundled 8x8 digits plays its part: the
Fréchet distance between real and generated images in the judge's hidden features (FID's recipe in a
smaller space), and the judge's verdict on the samples (how sure it is, how many digits it sees, and
the Inception-score-like ``exp(E[KL(p(y|x) || p(y))])`` that combines both, from 1 to 10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
