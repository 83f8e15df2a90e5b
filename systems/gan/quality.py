"""The GAN's sample score: a small "judge" trained on the run's own labelled images, and the callback that
scores the generator's samples with it at every validation.

There is no Inception network offline, and one trained on other images would judge other images. So the
judge is a small classifier trained, when the run starts, on the datamodule's own training images, at their
own size and channels: a few seconds on a CPU. It measures the Fréchet distance between real and generated
images in its hidden features (FID's recipe, through torchmetrics, in a space made for this data), and gives
its verdict on the samples: how sure it is, how many classes it sees, and the Inception-score-like
``exp(E[KL(p(y|x) || p(y))])`` that combines both.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance


class Judge(nn.Module):
    """A small CNN classifier of ``(channels, side, side)`` images in any range; images of 16 px or more are
    halved first (average pooling), which keeps 28 and 32 px data to a few seconds of training on a CPU.

    ``features`` is the hidden layer in which the Fréchet distance is measured; ``forward`` gives logits.
    """

    def __init__(self, channels: int, side: int, num_classes: int, num_features: int = 64) -> None:
        super().__init__()
        self.num_features = num_features  # what torchmetrics' FID reads off a feature extractor
        self.features = nn.Sequential(
            nn.AvgPool2d(2) if side >= 16 else nn.Identity(),
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 16, num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_judge(
    images: torch.Tensor, labels: torch.Tensor, held_out: int, seed: int = 0, steps: int = 300
) -> tuple[Judge, float]:
    """A ``Judge`` trained on all but ``held_out`` of the images (Adam, batches of 128) and its accuracy on
    those; frozen, in eval mode. It draws from a forked random state seeded with ``seed``: the same judge
    every time, and the global random state (the GAN's noise, restored on resume) is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order = torch.randperm(len(labels))
        train, test = order[held_out:], order[:held_out]
        judge = Judge(images.shape[1], images.shape[-1], int(labels.max()) + 1)
        optimizer = torch.optim.Adam(judge.parameters(), lr=2e-3, weight_decay=1e-4)
        for _ in range(steps):
            batch = train[torch.randint(len(train), (min(128, len(train)),))]
            loss = F.cross_entropy(judge(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    judge.eval().requires_grad_(False)
    with torch.no_grad():
        accuracy = (judge(images[test]).argmax(1) == labels[test]).float().mean().item()
    return judge, accuracy


def verdict(probs: torch.Tensor, min_share: float = 0.05) -> dict[str, torch.Tensor]:
    """What the judge's class probabilities ``(N, classes)`` say about a set of samples.

    - ``judge_score``: ``exp(mean KL(p(y|x) || p(y)))``, 1 (all alike or all unsure) to the number of
      classes (every sample a sure example of its class, all classes equally often);
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


def labelled_images(loader: Any, limit: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Up to ``limit`` images and their integer labels from a loader of ``(images, labels, ...)`` batches, or
    None when its batches carry no labels."""
    images, labels, count = [], [], 0
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2 or batch[1].dtype.is_floating_point:
            return None
        images.append(batch[0].float())
        labels.append(batch[1].long())
        count += len(batch[1])
        if count >= limit:
            break
    return (torch.cat(images)[:limit], torch.cat(labels)[:limit]) if images else None


class SampleQuality(Callback):
    """At every validation, score ``samples`` generated images against the real validation images and log
    ``val/fd`` (lower is better; the checkpoint callback keeps the best), ``val/judge_score``,
    ``val/judge_confidence`` and ``val/judge_classes``.

    The judge is trained once, when the run starts, on up to ``max_images`` of the datamodule's own training
    images, and its accuracy on the ones it did not see is printed and logged as ``judge/accuracy``: what
    the score stands on. Data without labels gets no judge: then nothing is scored and nothing monitored
    (``last.ckpt`` is kept). The samples come from fixed latents of a private generator, the same at every
    validation, and nothing here draws from the global random state, so resuming stays exact. Under DDP each
    process adds its shard of the real images and the first one the samples; torchmetrics sums them, so every
    process logs the same distance.
    """

    def __init__(self, samples: int = 512, max_images: int = 10_000) -> None:
        self.samples = samples
        self.max_images = max_images
        self.judge: Judge | None = None
        self.accuracy: float | None = None
        self.fid: FrechetInceptionDistance | None = None
        self._scoring = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.judge is not None or stage not in ("fit", "validate"):
            return
        data = trainer.datamodule.train_dataloader() if trainer.datamodule is not None else None
        with torch.random.fork_rng(devices=[]):  # a loader of the user's own may draw from it
            found = labelled_images(data, self.max_images) if data is not None else None
        if found is None:
            rank_zero_info(
                "The training data has no labels: no judge, so no sample score and no best checkpoint."
            )
            return
        held_out = max(1, len(found[1]) // 10)
        self.judge, self.accuracy = train_judge(*found, held_out)
        self.fid = FrechetInceptionDistance(feature=_Features(self.judge), normalize=False)
        rank_zero_info(
            f"Sample score: a judge trained on {len(found[1]) - held_out:,} training images recognises "
            f"{self.accuracy:.1%} of {held_out:,} others."
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.accuracy is not None:
            for logger in trainer.loggers:
                logger.log_metrics({"judge/accuracy": self.accuracy}, step=0)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._scoring = self.fid is not None and not trainer.sanity_checking
        if self._scoring:
            self.fid.to(pl_module.device)
            self.fid.reset()

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        if self._scoring:
            self.fid.update(batch[0].float(), real=True)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._scoring:
            return
        fake = pl_module.sample(self.samples, generator=torch.Generator().manual_seed(1))
        if trainer.is_global_zero:  # one copy of the samples in the sums, however many processes
            self.fid.update(fake, real=False)
        scores = {"fd": self.fid.compute()}  # all processes: it syncs
        with torch.no_grad():
            scores.update(verdict(self.judge(fake).softmax(1)))
        # every process has the same samples, hence the same scores: nothing to average
        pl_module.log_dict({f"val/{name}": value.float() for name, value in scores.items()})


class _Features(nn.Module):
    """The judge's hidden features as a module of their own: the feature extractor torchmetrics' FID calls."""

    def __init__(self, judge: Judge) -> None:
        super().__init__()
        self.judge = judge
        self.num_features = judge.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.judge.features(images.float())
