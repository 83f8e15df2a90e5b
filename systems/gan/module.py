"""The GAN system: two optimizers stepped by hand in Lightning 1.x's ``frequency`` order (WGAN-GP).

Lightning 1.x took ``({"optimizer": d_opt, "frequency": n_critic}, {"optimizer": g_opt, "frequency":
n_generator})`` and called ``training_step(batch, batch_idx, optimizer_idx)`` with one optimizer per batch:
``n_critic`` critic batches, then ``n_generator`` generator batches, the cycle keyed on the batch's index
within its epoch. 2.x has neither several optimizers under automatic optimization nor ``frequency``:
``training_step`` makes the same choice itself (``is_critic_batch``) and steps that optimizer alone.
"""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn
from torch.optim.lr_scheduler import LinearLR

from shared.errors import epochs_to_train, require
from shared.visuals import log_image_grid
from systems.gan.model import Discriminator, Generator, averaged, gradient_penalty
from systems.gan.quality import SampleQuality


class GAN(pl.LightningModule):
    """A DCGAN generator and critic trained with manual optimization, one optimizer step per batch.

    Args:
        image_shape: ``(channels, height, width)`` of the images (linked from the datamodule's ``dims``);
            the images come in [-1, 1], the range of the generator's ``tanh``.
        latent_dim: length of the generator's input noise vector.
        width: channels of the critic's first layer and of the generator's last; they double per halving.
        generator_blocks: 3x3 convolution blocks the generator adds at full resolution, after its doublings.
        ema_decay: decay of ``generator_ema``, the moving average of the generator's weights that draws every
            sample (grid, score, ``predict``, ``forward``); 0: the trained generator draws them.
        loss: ``wgan-gp`` (Wasserstein critic with gradient penalty) or ``bce`` (non-saturating GAN loss).
        n_critic: critic (discriminator) batches per cycle, 1.x's ``frequency`` of the first optimizer.
        n_generator: generator batches per cycle, 1.x's ``frequency`` of the second optimizer.
        gp_weight: weight of the gradient penalty (``wgan-gp`` only; the paper's lambda = 10).
        lr_generator: Adam learning rate of the generator.
        lr_discriminator: Adam learning rate of the critic.
        betas: Adam betas of both (the WGAN-GP paper used (0, 0.9), DCGAN (0.5, 0.999)).
        lr_decay_to: both learning rates fall linearly to this fraction by the last epoch (1 keeps them).
        scheduler_cadence: when the two schedulers step, by hand at an epoch's end. ``every_epoch``: both,
            every epoch (the generator's only in epochs that had a generator batch), so a decay means what it
            says. ``lightning_1x``: as Lightning 1.9.5 did with optimizer frequencies, only the scheduler of
            the optimizer active at the epoch's last batch, counted over all epochs (``total_batch_idx``).
        grid_size: number of fixed latent vectors drawn into the image grid.
        grid_every_n_epochs: draw the grid after every N-th training epoch (and after the last).
        grid_scale: each image pixel becomes ``grid_scale`` x ``grid_scale`` pixels in the PNG.
        judge: score the samples at each validation with a judge trained on the data's own labelled images
            (``quality.SampleQuality``).
        judge_samples: generated images scored at each validation.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        latent_dim: int = 64,
        width: int = 32,
        generator_blocks: int = 2,
        ema_decay: float = 0.999,
        loss: Literal["wgan-gp", "bce"] = "wgan-gp",
        n_critic: int = 2,
        n_generator: int = 1,
        gp_weight: float = 10.0,
        lr_generator: float = 2e-3,
        lr_discriminator: float = 5e-4,
        betas: tuple[float, float] = (0.0, 0.9),
        lr_decay_to: float = 1.0,
        scheduler_cadence: Literal["every_epoch", "lightning_1x"] = "every_epoch",
        grid_size: int = 64,
        grid_every_n_epochs: int = 10,
        grid_scale: int = 4,
        judge: bool = True,
        judge_samples: int = 512,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # what the argument types cannot say
        _, height, side = image_shape
        require(height == side >= 4, f"The GAN needs square images of 4 px or more, got {height}x{side}.")
        sizes = (latent_dim, width, grid_size, grid_every_n_epochs, grid_scale, judge_samples)
        require(min(n_critic, n_generator) >= 1, "model.n_critic and model.n_generator must be 1 or more.")
        require(
            min(sizes) >= 1 and generator_blocks >= 0,
            "model.latent_dim, width, grid_* and judge_samples must be 1 or more, generator_blocks 0 or more.",
        )
        require(
            min(lr_generator, lr_discriminator) > 0 and 0 < lr_decay_to <= 1 and 0 <= ema_decay < 1,
            "model.lr_generator and lr_discriminator must be > 0, lr_decay_to in (0, 1], ema_decay in [0, 1).",
        )
        self.automatic_optimization = False
        self.generator = Generator(latent_dim, image_shape, width, generator_blocks)
        self.discriminator = Discriminator(image_shape, width)
        self.generator_ema = averaged(self.generator, ema_decay) if ema_decay else None
        # a buffer: it follows the module to its device and is saved, so every grid shows the same latents
        latents = torch.randn(grid_size, latent_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("fixed_latents", latents)

    # --- the pattern: n_critic critic batches, then n_generator generator batches, one optimizer each ---

    def is_critic_batch(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` (its index within the epoch) goes to the critic, as 1.x chose: the first
        ``n_critic`` positions of each cycle of ``n_critic + n_generator``. The index restarts with every
        epoch, and so does the cycle; a mid-epoch checkpoint keeps it (the loop's batch counter)."""
        return batch_idx % (self.hparams.n_critic + self.hparams.n_generator) < self.hparams.n_critic

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        real = batch[0]
        d_optimizer, g_optimizer = self.optimizers()
        critic = self.is_critic_batch(batch_idx)
        optimizer = d_optimizer if critic else g_optimizer
        # toggle: every parameter outside this optimizer gets requires_grad=False until untoggle, so the
        # backward computes no gradient for the other network (gradients still flow *through* the critic
        # into the generator), and the step cannot touch it
        self.toggle_optimizer(optimizer)
        loss = self.critic_loss(real) if critic else self.generator_loss(real.shape[0])
        optimizer.zero_grad()
        # the backward outside autocast, as PyTorch's AMP recipe has it: Lightning calls training_step inside
        # autocast, and there the double backward of the gradient penalty would run in half precision
        with torch.autocast(self.device.type, enabled=False):
            self.manual_backward(loss)
        optimizer.step()
        self.untoggle_optimizer(optimizer)
        if not critic and self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        self._log_epoch_mean("train/d_loss" if critic else "train/g_loss", loss, real.shape[0], prog_bar=True)

    def critic_loss(self, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            fake = self.generator(self._latents(real.shape[0]))
        real_scores, fake_scores = self.discriminator(real), self.discriminator(fake)
        if self.hparams.loss == "bce":
            real_loss = F.binary_cross_entropy_with_logits(real_scores, torch.ones_like(real_scores))
            return real_loss + F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))
        penalty = gradient_penalty(self.discriminator, real, fake)
        self._log_epoch_mean("train/gp", penalty, real.shape[0])
        self._log_epoch_mean("train/wasserstein", real_scores.mean() - fake_scores.mean(), real.shape[0])
        return fake_scores.mean() - real_scores.mean() + self.hparams.gp_weight * penalty

    def generator_loss(self, n: int) -> torch.Tensor:
        scores = self.discriminator(self.generator(self._latents(n)))
        if self.hparams.loss == "bce":  # non-saturating: maximise log D(G(z)) rather than minimise log(1 - D)
            return F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))
        return -scores.mean()

    def _latents(self, n: int) -> torch.Tensor:
        # the global random state: seeded by seed_everything and restored on resume by RandomStateCallback
        return torch.randn(n, self.hparams.latent_dim, device=self.device)

    def _log_epoch_mean(
        self, name: str, value: torch.Tensor, batch_size: int, prog_bar: bool = False
    ) -> None:
        # the mean over the epoch's batches; under DDP also over the processes, once at the epoch's end
        self.log(
            name,
            value.detach(),
            on_epoch=True,
            on_step=False,
            batch_size=batch_size,
            sync_dist=True,
            prog_bar=prog_bar,
        )

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
        return [d_optimizer, g_optimizer], schedulers  # 1.x's order: the critic first

    def on_train_epoch_end(self) -> None:
        # manual optimization: Lightning steps no scheduler; this is their one cadence, at an epoch's end
        d_scheduler, g_scheduler = self.lr_schedulers()
        if self.hparams.scheduler_cadence == "lightning_1x":
            # 1.9.5 (PR #4868) stepped an epoch-interval scheduler only for the optimizer active at the
            # epoch's last batch, "active" counted over all epochs, not within the epoch as the batches are
            last_batch = self.trainer.fit_loop.epoch_loop.total_batch_idx
            (d_scheduler if self.is_critic_batch(last_batch) else g_scheduler).step()
        else:  # both, for each network that trained (an epoch of n_critic batches or fewer has no G batch)
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

    def on_train_start(self) -> None:
        if not self.trainer.fast_dev_run and self.trainer.num_training_batches <= self.hparams.n_critic:
            rank_zero_warn(
                f"An epoch has {self.trainer.num_training_batches} batches and the cycle starts every epoch "
                f"with n_critic={self.hparams.n_critic} critic batches (as in 1.x): the generator never "
                "steps. Use more batches per epoch (limit_train_batches) or a smaller n_critic."
            )

    # --- samples: the grid, validation's score, predict ---

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.render(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [-1, 1] as an ``(n, C, H, W)`` tensor, from the generator in eval mode (BatchNorm's
        running statistics), so the same latents always give the same images."""
        z = torch.randn(
            n, self.hparams.latent_dim, generator=generator, device=None if generator else self.device
        )
        return self.render(z.to(self.device))

    @torch.no_grad()
    def render(self, z: torch.Tensor) -> torch.Tensor:
        """The images of the sampling generator (the average, if any) for latents ``z``, in eval mode, leaving
        its train/eval mode as it was."""
        generator = self.generator if self.generator_ema is None else self.generator_ema.module
        was_training = generator.training
        generator.eval()
        images = generator(z).float()
        generator.train(was_training)
        return images

    def draw_grid(self) -> None:
        """The generator's images for the fixed latents: a PNG in the version folder, a TensorBoard image.
        Every process calls it (finding the version folder is a collective under DDP); rank 0 writes."""
        images = self.render(self.fixed_latents)
        nrow = max(1, int(len(images) ** 0.5))
        log_image_grid(self.trainer, "samples", images, nrow=nrow, scale=self.hparams.grid_scale)

    def configure_callbacks(self) -> list[Callback]:
        return [SampleQuality(self.hparams.judge_samples)] if self.hparams.judge else []

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Nothing to compute here: ``SampleQuality`` reads the real images of each validation batch."""

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """One generated image per item of the batch: ``predict`` writes as many samples as the set holds."""
        return self.sample(len(batch[0]))
