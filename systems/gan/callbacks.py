"""The GAN's extras: the grid of fixed latents, and the samples' score by a judge trained on the data's own
labelled images when the run starts (offline there is no Inception network; one trained on other images would
judge other images)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchvision.utils import make_grid, save_image

from shared.visuals import epoch_file, tensorboards, to_trackers


class SampleGrid(pl.Callback):
    """Every ``every_n_epochs`` training epochs (and after the last) the module's ``fixed_latents`` drawn into
    ``samples/epoch=NNN.png`` in the run's folder, TensorBoard's image ``samples`` and a tracker's artifact; each
    pixel ``scale`` px."""

    def __init__(self, every_n_epochs: int, scale: int) -> None:
        self.every_n_epochs, self.scale = every_n_epochs, scale

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs and not trainer.should_stop:
            return
        images = pl_module.render(pl_module.fixed_latents).cpu()  # every process: epoch_file is a broadcast
        if (path := epoch_file(trainer, "samples", ".png")) is not None:
            pixels = ((images + 1) / 2).repeat_interleave(self.scale, -2).repeat_interleave(self.scale, -1)
            grid = make_grid(pixels, nrow=int(len(images) ** 0.5), padding=self.scale, pad_value=1.0)
            save_image(grid, path)
            for writer in tensorboards(trainer):
                writer.add_image("samples", grid, global_step=trainer.global_step)
            to_trackers(trainer, path, "samples")


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


class SampleQuality(pl.Callback):
    """At every validation, ``samples`` generated images scored against the real validation images:
    ``val/fd``, the Fréchet distance in the judge's hidden features (FID's recipe; lower is better, the
    checkpoint callback keeps the best), and ``val/`` + ``verdict``'s names. What the score stands on, the
    judge's accuracy on the tenth of (up to ``max_images``) training images it did not see, is printed and
    logged as ``judge/accuracy``. No labels, no judge. The judge and the samples draw from private random
    states, so resuming stays exact. Under DDP each process adds its shard of the real images, the first one
    the samples; torchmetrics sums them."""

    def __init__(self, samples: int = 512, max_images: int = 10_000) -> None:
        self.samples, self.max_images = samples, max_images
        self.judge: nn.Sequential | None = None
        self.fid: FrechetInceptionDistance | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.judge is not None or stage not in ("fit", "validate") or trainer.datamodule is None:
            return
        images, labels = [], []
        # a private random state: a loader of the user's own may draw from it, and the judge does
        with torch.random.fork_rng(devices=[]):
            for batch in trainer.datamodule.train_dataloader():
                if not isinstance(batch, list | tuple) or len(batch) < 2 or batch[1].is_floating_point():
                    labels = []
                    break
                images.append(batch[0].float())
                labels.append(batch[1].long())
                if sum(map(len, labels)) >= self.max_images:
                    break
            if not labels:
                rank_zero_info(
                    "The training data has no labels: no judge, so no sample score and no best checkpoint."
                )
                return
            images, labels = torch.cat(images)[: self.max_images], torch.cat(labels)[: self.max_images]
            torch.manual_seed(0)  # the same judge every time
            order, held_out = torch.randperm(len(labels)), max(1, len(labels) // 10)
            train, test = order[held_out:], order[:held_out]
            # a small CNN; 16 px or more are halved first, which keeps 28 and 32 px to seconds on a CPU
            features = nn.Sequential(
                nn.AvgPool2d(2) if images.shape[-1] >= 16 else nn.Identity(),
                *(nn.Conv2d(images.shape[1], 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
                *(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()),
                *(nn.Linear(32 * 16, 64), nn.ReLU()),
            )
            features.num_features = 64  # what torchmetrics' FID reads off a feature extractor
            judge = nn.Sequential(features, nn.Linear(64, int(labels.max()) + 1))
            optimizer = torch.optim.Adam(judge.parameters(), lr=2e-3, weight_decay=1e-4)
            for _ in range(300):
                batch = train[torch.randint(len(train), (min(128, len(train)),))]
                optimizer.zero_grad()
                nn.functional.cross_entropy(judge(images[batch]), labels[batch]).backward()
                optimizer.step()
        self.judge = judge.eval().requires_grad_(False)  # frozen: its outputs need no no_grad
        self.accuracy = (judge(images[test]).argmax(1) == labels[test]).float().mean().item()
        self.fid = FrechetInceptionDistance(feature=features, normalize=False)
        rank_zero_info(
            f"Sample score: a judge trained on {len(train):,} training images recognises "
            f"{self.accuracy:.1%} of {held_out:,} others."
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in trainer.loggers if self.judge is not None else ():
            logger.log_metrics({"judge/accuracy": self.accuracy}, step=0)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._scoring = self.judge is not None and not trainer.sanity_checking
        if self._scoring:
            self.judge.to(pl_module.device)  # with its features, which the FID holds
            self.fid.to(pl_module.device).reset()

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: list, *args: object
    ) -> None:
        if self._scoring:
            self.fid.update(batch[0].float(), real=True)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._scoring:
            return
        fake = pl_module.sample(self.samples, generator=torch.Generator().manual_seed(1))
        if trainer.is_global_zero:  # one copy of the samples in the sums, however many processes
            self.fid.update(fake, real=False)
        # compute syncs (every process calls it); every process has the same samples, so the same verdict
        scores = {"fd": self.fid.compute(), **verdict(self.judge(fake).softmax(1))}
        pl_module.log_dict({f"val/{name}": value.float() for name, value in scores.items()})
