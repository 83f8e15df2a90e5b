"""What the GAN adds beside its training: the image grid of fixed latents, and the samples' score by a judge.

There is no Inception network offline, and one trained on other images would judge other images. So the judge is
a small classifier trained when the run starts on the datamodule's own training images (seconds on a CPU). It
gives the Fréchet distance between real and generated images in its hidden features (FID's recipe, through
torchmetrics, in a space made for this data) and its verdict on the samples: how sure it is, how many classes
it sees, and the Inception-score-like ``exp(E[KL(p(y|x) || p(y))])`` of both.
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
from torchvision.utils import make_grid, save_image

from shared.visuals import epoch_file, tensorboards


class SampleGrid(Callback):
    """Every ``every_n_epochs`` training epochs (and after the last) the module's ``fixed_latents`` drawn into
    ``samples/epoch=NNN.png`` in the run's folder and TensorBoard's image ``samples``; each pixel ``scale`` px."""

    def __init__(self, every_n_epochs: int, scale: int) -> None:
        self.every_n_epochs, self.scale = every_n_epochs, scale

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs and not trainer.should_stop:
            return
        images = pl_module.render(pl_module.fixed_latents).cpu()  # every process: epoch_file is a broadcast
        path = epoch_file(trainer, "samples", ".png")
        if path is not None:
            pixels = (
                ((images + 1) / 2)
                .clamp(0, 1)
                .repeat_interleave(self.scale, -2)
                .repeat_interleave(self.scale, -1)
            )
            grid = make_grid(pixels, nrow=max(1, int(len(images) ** 0.5)), padding=self.scale, pad_value=1.0)
            save_image(grid, path)
            for writer in tensorboards(trainer):
                writer.add_image("samples", grid, global_step=trainer.global_step)


class Judge(nn.Module):
    """A small CNN classifier of ``(channels, side, side)`` images; 16 px or more are halved first, which keeps 28
    and 32 px data to seconds on a CPU. ``features`` is the hidden layer the Fréchet distance is measured in."""

    def __init__(self, channels: int, side: int, num_classes: int, num_features: int = 64) -> None:
        super().__init__()
        self.num_features = num_features  # what torchmetrics' FID reads off a feature extractor
        self.features = nn.Sequential(
            nn.AvgPool2d(2) if side >= 16 else nn.Identity(),
            *(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            *(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()),
            *(nn.Linear(32 * 16, num_features), nn.ReLU()),
        )
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_judge(
    images: torch.Tensor, labels: torch.Tensor, held_out: int, seed: int = 0, steps: int = 300
) -> tuple[Judge, float]:
    """A frozen ``Judge`` trained on all but ``held_out`` of the images (Adam, batches of 128), and its accuracy on
    those. It draws from a forked random state: the same judge every time, the GAN's noise untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order = torch.randperm(len(labels))
        train, test = order[held_out:], order[:held_out]
        judge = Judge(images.shape[1], images.shape[-1], int(labels.max()) + 1)
        optimizer = torch.optim.Adam(judge.parameters(), lr=2e-3, weight_decay=1e-4)
        for _ in range(steps):
            batch = train[torch.randint(len(train), (min(128, len(train)),))]
            optimizer.zero_grad()
            F.cross_entropy(judge(images[batch]), labels[batch]).backward()
            optimizer.step()
    judge.eval().requires_grad_(False)
    with torch.no_grad():
        return judge, (judge(images[test]).argmax(1) == labels[test]).float().mean().item()


def verdict(probs: torch.Tensor, min_share: float = 0.05) -> dict[str, torch.Tensor]:
    """What the judge's class probabilities ``(N, classes)`` say about a set of samples: ``judge_score``,
    ``exp(mean KL(p(y|x) || p(y)))`` from 1 (all alike or unsure) to the number of classes; ``judge_confidence``,
    the mean probability of the chosen class; ``judge_classes``, classes chosen for ``min_share`` or more."""
    probs = probs.double()
    kl = (probs * (probs.clamp_min(1e-12).log() - probs.mean(0, keepdim=True).clamp_min(1e-12).log())).sum(1)
    votes = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double() / probs.shape[0]
    return {
        "judge_score": kl.mean().exp(),
        "judge_confidence": probs.max(1).values.mean(),
        "judge_classes": (votes >= min_share).sum().double(),
    }


def labelled_images(loader: Any, limit: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Up to ``limit`` images and integer labels from ``(images, labels, ...)`` batches; None without labels."""
    images, labels = [], []
    for batch in loader:
        if not isinstance(batch, list | tuple) or len(batch) < 2 or batch[1].dtype.is_floating_point:
            return None
        images.append(batch[0].float())
        labels.append(batch[1].long())
        if sum(map(len, labels)) >= limit:
            break
    return (torch.cat(images)[:limit], torch.cat(labels)[:limit]) if images else None


class SampleQuality(Callback):
    """At every validation, ``samples`` generated images scored against the real validation images: ``val/fd``
    (lower is better; the checkpoint callback keeps the best), ``val/judge_score``, ``val/judge_confidence`` and
    ``val/judge_classes``. The judge trains when the run starts on up to ``max_images`` training images; its
    accuracy on the ones it did not see, what the score stands on, is printed and logged as ``judge/accuracy``.
    Data without labels gets no judge and no score. The samples come from fixed latents of a private generator and
    nothing here draws from the global random state, so resuming stays exact. Under DDP each process adds its
    shard of the real images and the first one the samples; torchmetrics sums them."""

    def __init__(self, samples: int = 512, max_images: int = 10_000) -> None:
        self.samples, self.max_images = samples, max_images
        self.judge: Judge | None = None
        self.fid: FrechetInceptionDistance | None = None
        self.accuracy: float | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.judge is not None or stage not in ("fit", "validate") or trainer.datamodule is None:
            return
        with torch.random.fork_rng(devices=[]):  # a loader of the user's own may draw from it
            found = labelled_images(trainer.datamodule.train_dataloader(), self.max_images)
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
        for logger in trainer.loggers if self.judge is not None else ():
            logger.log_metrics({"judge/accuracy": self.accuracy}, step=0)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._scoring = self.judge is not None and not trainer.sanity_checking
        if self._scoring:
            self.fid.to(pl_module.device).reset()

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
        self.judge, self.num_features = judge, judge.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.judge.features(images.float())
