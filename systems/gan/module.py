"""The GAN system: two optimizers stepped by hand in Lightning 1.x's ``frequency`` order (WGAN-GP)."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch.optim.lr_scheduler import LinearLR

from datamodules import DigitsDataModule
from shared.errors import UserError, epochs_to_train
from shared.visuals import log_image_grid
from systems.gan.model import Discriminator, Generator
from systems.gan.quality import DigitsJudge, frechet_distance, train_judge, verdict


class GAN(pl.LightningModule):
    """A DCGAN generator and critic trained with manual optimization, one optimizer step per batch.

    Lightning 1.x took ``({'optimizer': d_opt, 'frequency': n_critic}, {'optimizer': g_opt, 'frequency':
    n_generator})`` and gave each batch to one optimizer: ``n_critic`` critic batches, then
    ``n_generator`` generator batches, the cycle keyed on the batch's index within its epoch. 2.x has
    neither several optimizers under automatic optimization nor ``frequency``; ``training_step`` makes the
    same choice itself (``is_critic_batch``) and steps that optimizer alone.

    Args:
        image_shape: ``(channels, height, width)`` of the images (linked from the datamodule's ``dims``).
        data_range: the pixel range of the data (linked from the datamodule's ``value_range``); the
            generator's ``tanh`` yields [-1, 1], so the data must come in [-1, 1] too.
        latent_dim: length of the generator's input noise vector.
        width: channels of the critic's first layer and of the generator's last; they double per halving.
        loss: ``wgan-gp`` (Wasserstein critic with gradient penalty) or ``bce`` (non-saturating GAN loss).
        n_critic: critic (discriminator) batches per cycle, 1.x's ``frequency`` of the first optimizer.
        n_generator: generator batches per cycle, 1.x's ``frequency`` of the second optimizer.
        gp_weight: weight of the gradient penalty (``wgan-gp`` only; the paper's lambda = 10).
        lr_generator: Adam learning rate of the generator.
        lr_discriminator: Adam learning rate of the critic.
        betas: Adam betas of both (the WGAN-GP paper used (0, 0.9), DCGAN (0.5, 0.999)).
        lr_decay_to: both learning rates fall linearly to this fraction by the last epoch (1 keeps them);
            each scheduler is stepped by hand once at the end of every training epoch.
        grid_size: number of fixed latent vectors drawn into the image grid.
        grid_every_n_epochs: draw the grid after every N-th training epoch (and after the last).
        grid_scale: each image pixel becomes ``grid_scale`` x ``grid_scale`` pixels in the PNG.
        judge: score samples during validation with the frozen digits judge (grey images only).
        judge_samples: generated images scored at each validation.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        data_range: tuple[float, float] = (-1.0, 1.0),
        latent_dim: int = 64,
        width: int = 32,
        loss: Literal["wgan-gp", "bce"] = "wgan-gp",
        n_critic: int = 5,
        n_generator: int = 1,
        gp_weight: float = 10.0,
        lr_generator: float = 5e-4,
        lr_discriminator: float = 5e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        lr_decay_to: float = 1.0,
        grid_size: int = 64,
        grid_every_n_epochs: int = 10,
        grid_scale: int = 4,
        judge: bool = True,
        judge_samples: int = 512,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (("n_critic", n_critic), ("n_generator", n_generator)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(
                    f"{name} must be a positive int (batches per cycle, as 1.x's optimizer frequency), got "
                    f"{value!r}: set model.{name} to 1 or more."
                )
        if tuple(data_range) != (-1.0, 1.0):
            raise UserError(
                f"The generator's tanh yields images in [-1, 1] but the data come in {list(data_range)}: "
                "set data.value_range=[-1, 1] (config.yaml does)."
            )
        if loss not in ("wgan-gp", "bce"):
            raise UserError(f"loss must be 'wgan-gp' or 'bce', got {loss!r}.")
        if min(latent_dim, width, grid_size, grid_every_n_epochs, grid_scale, judge_samples) < 1:
            raise UserError(
                "latent_dim, width, grid_size, grid_every_n_epochs, grid_scale and judge_samples must all "
                "be 1 or more."
            )
        if lr_generator <= 0 or lr_discriminator <= 0 or not 0 < lr_decay_to <= 1:
            raise UserError(
                f"learning rates must be > 0 and lr_decay_to in (0, 1], got {lr_generator}, "
                f"{lr_discriminator}, {lr_decay_to}."
            )
        if judge and image_shape[0] != 1:
            raise UserError(
                f"The digits judge scores grey images, these have {image_shape[0]} channels: set "
                "model.judge=false (e.g. for CIFAR-10)."
            )
        self.automatic_optimization = False
        self.generator = Generator(latent_dim, image_shape, width)
        self.discriminator = Discriminator(image_shape, width)
        # a buffer: it follows the module to its device and is saved, so every grid shows the same latents
        latents = torch.randn(grid_size, latent_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("fixed_latents", latents)
        self.judge = DigitsJudge().requires_grad_(False) if judge else None
        self._judge_trained = False
        # what validation_step keeps for on_validation_epoch_end (1.x passed it as `outputs`); freed there
        self.val_features: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [-1, 1] as an ``(n, C, H, W)`` tensor, from the generator in eval mode (BatchNorm's
        running statistics), so the same latents always give the same images."""
        if generator is None:
            z = torch.randn(n, self.hparams.latent_dim, device=self.device)
        else:
            z = torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)
        return self.render(z)

    @torch.no_grad()
    def render(self, z: torch.Tensor) -> torch.Tensor:
        """The generator's images for latents ``z``, in eval mode, leaving its train/eval mode as it was."""
        was_training = self.generator.training
        self.generator.eval()
        images = self.generator(z).float()
        self.generator.train(was_training)
        return images

    # ------------------------------------------------------------------ training
    def is_critic_batch(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` (its index within the epoch) goes to the critic, as 1.x chose.

        1.x: position ``batch_idx % (n_critic + n_generator)``; the first ``n_critic`` positions of each
        cycle are the critic's. The index restarts with every epoch, and so does the cycle. It survives
        a mid-epoch checkpoint: the loop's batch counter is in the checkpoint and counts on after resume.
        """
        return batch_idx % (self.hparams.n_critic + self.hparams.n_generator) < self.hparams.n_critic

    def on_train_start(self) -> None:
        if not self.trainer.fast_dev_run and self.trainer.num_training_batches <= self.hparams.n_critic:
            rank_zero_warn(
                f"An epoch has {self.trainer.num_training_batches} batches and the cycle starts every epoch "
                f"with n_critic={self.hparams.n_critic} critic batches (as in 1.x): the generator never "
                "steps. Use more batches per epoch (limit_train_batches) or a smaller n_critic."
            )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real = batch[0]
        d_optimizer, g_optimizer = self.optimizers()
        if self.is_critic_batch(batch_idx):
            self._critic_step(real, d_optimizer)
        else:
            self._generator_step(real.shape[0], g_optimizer)

    def _critic_step(self, real: torch.Tensor, optimizer: Any) -> None:
        # toggle: every parameter outside this optimizer gets requires_grad=False until untoggle, so the
        # backward below computes no gradient for the generator (and the step cannot touch it)
        self.toggle_optimizer(optimizer)
        with torch.no_grad():
            fake = self.generator(self._latents(real.shape[0]))
        real_scores, fake_scores = self.discriminator(real), self.discriminator(fake)
        n = real.shape[0]
        if self.hparams.loss == "wgan-gp":
            penalty = self.gradient_penalty(real, fake)
            loss = fake_scores.mean() - real_scores.mean() + self.hparams.gp_weight * penalty
            self._log_epoch_mean("train/gp", penalty, n)
            self._log_epoch_mean("train/wasserstein", real_scores.mean() - fake_scores.mean(), n)
        else:
            real_loss = F.binary_cross_entropy_with_logits(real_scores, torch.ones_like(real_scores))
            loss = real_loss + F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.untoggle_optimizer(optimizer)
        self._log_epoch_mean("train/d_loss", loss, n, prog_bar=True)

    def _generator_step(self, batch_size: int, optimizer: Any) -> None:
        # the critic's parameters are switched off: gradients flow through its layers to the images and on
        # into the generator, but none is computed for (or accumulated into) the critic's own weights
        self.toggle_optimizer(optimizer)
        scores = self.discriminator(self.generator(self._latents(batch_size)))
        if self.hparams.loss == "wgan-gp":
            loss = -scores.mean()
        else:  # non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z)))
            loss = F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.untoggle_optimizer(optimizer)
        self._log_epoch_mean("train/g_loss", loss, batch_size, prog_bar=True)

    def _log_epoch_mean(
        self, name: str, value: torch.Tensor, batch_size: int, prog_bar: bool = False
    ) -> None:
        # the mean over the epoch's batches; under DDP also over the processes, once at the epoch's end
        self.log(
            name,
            value.detach(),
            on_step=False,
            on_epoch=True,
            prog_bar=prog_bar,
            batch_size=batch_size,
            sync_dist=True,
        )

    def _latents(self, n: int) -> torch.Tensor:
        # the global random state: seeded by seed_everything and restored on resume by RandomStateCallback
        return torch.randn(n, self.hparams.latent_dim, device=self.device)

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``E[(|grad_x D(x)| - 1)^2]`` at random points between real and fake images (WGAN-GP), in fp32.

        Autocast is switched off here: under ``16-mixed`` the critic's input gradients of a half-precision
        forward can underflow to 0 or overflow fp16's 65504 (the GradScaler scales the loss, not this inner
        ``autograd.grad``), and the double backward through them doubles the risk. The other critic
        passes still run in mixed precision.
        """
        with torch.autocast(device_type=self.device.type, enabled=False):
            alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
            points = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
            (grads,) = torch.autograd.grad(self.discriminator(points).sum(), points, create_graph=True)
            # the small constant keeps the norm's gradient finite where an input gradient is exactly zero
            norms = (grads.flatten(1).square().sum(1) + 1e-12).sqrt()
            return (norms - 1).square().mean()

    def on_train_epoch_end(self) -> None:
        # manual optimization: Lightning steps no scheduler; this is their one cadence, once per epoch, for
        # each network that trained in it (an epoch of n_critic batches or fewer has no generator batch)
        d_scheduler, g_scheduler = self.lr_schedulers()
        d_scheduler.step()
        if self.trainer.fit_loop.epoch_loop.batch_progress.current.completed > self.hparams.n_critic:
            g_scheduler.step()
        last = self.trainer.max_epochs is not None and self.current_epoch + 1 >= self.trainer.max_epochs
        if (
            (self.current_epoch + 1) % self.hparams.grid_every_n_epochs == 0
            or last
            or self.trainer.should_stop
        ):
            self.draw_grid()

    def draw_grid(self) -> None:
        """The generator's images for the fixed latents: a PNG in the version folder, a TensorBoard image.

        Every process calls it (finding the version folder is a collective under DDP); rank 0 writes.
        """
        images = self.render(self.fixed_latents)
        nrow = max(1, int(len(images) ** 0.5))
        log_image_grid(self.trainer, "samples", images, nrow=nrow, scale=self.hparams.grid_scale)

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[LinearLR]]:
        betas = tuple(self.hparams.betas)
        d_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=self.hparams.lr_discriminator, betas=betas
        )
        g_optimizer = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_generator, betas=betas)
        # constant rates need no length; a decay is sized by trainer.max_epochs
        total = epochs_to_train(self.trainer) if self.hparams.lr_decay_to < 1 else 1
        schedulers = [
            LinearLR(opt, 1.0, self.hparams.lr_decay_to, total) for opt in (d_optimizer, g_optimizer)
        ]
        # the order is 1.x's: the critic first, then the generator
        return [d_optimizer, g_optimizer], schedulers

    # ------------------------------------------------------------------ validation: the quality score
    def setup(self, stage: str) -> None:
        """Train the judge once (about a second, seeded, on the bundled digits); a checkpoint that is loaded
        afterwards brings its own copy of the same weights."""
        if self.judge is None or self._judge_trained:
            return
        digits = DigitsDataModule(value_range=(-1.0, 1.0))
        digits.setup()
        pairs = [digits.train_set[i] for i in range(len(digits.train_set))]
        images, labels = (torch.stack(column) for column in zip(*pairs, strict=True))
        self.judge.load_state_dict(train_judge(images, labels).state_dict())
        self._judge_trained = True

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        if self.judge is not None and not self.trainer.sanity_checking:
            self.val_features.append(self.judge.features(batch[0]).float())

    def on_validation_epoch_end(self) -> None:
        if not self.val_features:
            return
        # under DDP each process saw its own shard of the real images: gather them all
        real = self.all_gather(torch.cat(self.val_features)).flatten(0, -2)
        self.val_features.clear()
        # the same latents at every validation (a private generator: the global random state is untouched)
        fake = self.sample(self.hparams.judge_samples, generator=torch.Generator().manual_seed(1))
        fake_features = self.judge.features(fake).float()
        scores = {"fd": frechet_distance(fake_features, real)}
        scores.update(verdict(self.judge.head(fake_features).softmax(1)))
        # every process computed the same scores from the gathered features: syncing only averages equals
        self.log_dict({f"val/{name}": value.float() for name, value in scores.items()}, sync_dist=True)

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One generated image per item of the batch: ``predict`` writes as many samples as the set holds."""
        return self.sample(len(batch[0]))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._judge_trained = True
