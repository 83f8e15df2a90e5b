"""The GAN system: two optimizers stepped by hand in Lightning 1.x's ``frequency`` order (WGAN-GP ``n_critic``).
2.x has no ``frequency``: ``training_step`` makes 1.x's choice of optimizer itself (``model.is_critic_batch``)
and steps that one alone. The samples' grid and score are in ``callbacks.py``."""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch.optim.lr_scheduler import LinearLR

from shared.errors import epochs_to_train, require
from systems.gan.callbacks import SampleGrid, SampleQuality
from systems.gan.model import Discriminator, Generator, averaged, critic_loss, generator_loss, is_critic_batch


class GAN(pl.LightningModule):
    """A DCGAN generator and critic trained with manual optimization, one optimizer step per batch.

    Args:
        image_shape: ``(channels, height, width)`` of the images in [-1, 1] (linked from the data's ``dims``).
        latent_dim: length of the generator's input noise.
        width: channels of the critic's first layer and of the generator's last; they double per halving.
        generator_blocks: 3x3 convolution blocks the generator adds at full resolution.
        ema_decay: decay of ``generator_ema``, the generator's average that draws every sample (0: the generator).
        loss: ``wgan-gp`` (Wasserstein critic with gradient penalty) or ``bce`` (non-saturating GAN loss).
        n_critic: critic batches per cycle, 1.x's ``frequency`` of the first optimizer.
        n_generator: generator batches per cycle, 1.x's ``frequency`` of the second optimizer.
        gp_weight: weight of the gradient penalty (``wgan-gp``; the paper's lambda = 10).
        lr_generator: Adam learning rate of the generator.
        lr_discriminator: Adam learning rate of the critic.
        betas: Adam betas of both (WGAN-GP's (0, 0.9), DCGAN's (0.5, 0.999)).
        lr_decay_to: both learning rates fall linearly to this fraction by the last epoch (1 keeps them).
        scheduler_cadence: ``every_epoch``: both schedulers at every epoch's end; ``lightning_1x``: as 1.9.5, only
            the one of the optimizer active at the epoch's last batch, counted over all epochs.
        grid_size: fixed latent vectors drawn into the image grid.
        grid_every_n_epochs: draw the grid after every N-th training epoch (and after the last).
        grid_scale: each image pixel becomes ``grid_scale`` x ``grid_scale`` pixels in the PNG.
        judge: score the samples at each validation with a judge trained on the data's own labelled images.
        judge_samples: generated images scored at each validation.
        compile: ``torch.compile`` the generator and the critic in place (checkpoints keep their keys); the penalty's
            double backward (compiled graphs have none) and the average that draws the samples stay eager."""

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
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _, height, side = image_shape  # what the argument types cannot say:
        require(height == side >= 4, f"The GAN needs square images of 4 px or more, got {height}x{side}.")
        require(min(n_critic, n_generator) >= 1, "model.n_critic and model.n_generator must be 1 or more.")
        sizes = (latent_dim, width, grid_size, grid_every_n_epochs, grid_scale, judge_samples)
        positive = "model.latent_dim, width, grid_* and judge_samples must be 1 or more"
        require(min(sizes) >= 1 and generator_blocks >= 0, f"{positive}, generator_blocks 0 or more.")
        rates = min(lr_generator, lr_discriminator) > 0 and 0 < lr_decay_to <= 1 and 0 <= ema_decay < 1
        ranges = "lr_decay_to in (0, 1], ema_decay in [0, 1)"
        require(rates, f"model.lr_generator and lr_discriminator must be > 0, {ranges}.")
        self.automatic_optimization = False
        self.generator = Generator(latent_dim, image_shape, width, generator_blocks)
        self.discriminator = Discriminator(image_shape, width)
        self.generator_ema = averaged(self.generator, ema_decay) if ema_decay else None
        # after `averaged`: its deep copy of a compiled generator would call the original's forward
        if compile:
            self.generator.compile()
            self.discriminator.compile()
        # a buffer: it follows the module to its device and is saved, so every grid shows the same latents
        latents = torch.randn(grid_size, latent_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("fixed_latents", latents)
        self.last_batch_idx = -1

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        real, hp = batch[0], self.hparams
        critic = is_critic_batch(batch_idx, hp.n_critic, hp.n_generator)  # batch_idx: within the epoch
        optimizer = self.optimizers()[0 if critic else 1]
        z = torch.randn(len(real), hp.latent_dim, device=self.device)  # the global state: restored on resume
        # inside, the other net gets no gradient (the generator's still flows *through* the critic), no step
        with self.toggled_optimizer(optimizer):
            if critic:
                with torch.no_grad():
                    fake = self.generator(z)
                loss, parts = critic_loss(self.discriminator, real, fake, hp.loss, hp.gp_weight)
            else:
                loss, parts = generator_loss(self.discriminator, self.generator(z), hp.loss), {}
            optimizer.zero_grad()
            # outside autocast (PyTorch's AMP recipe), or the penalty's double backward runs in half precision
            with torch.autocast(self.device.type, enabled=False):
                self.manual_backward(loss)
            optimizer.step()
        if not critic and self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        self.last_batch_idx = batch_idx
        # epoch means; under DDP also over the processes
        epoch_mean = {"on_step": False, "on_epoch": True, "sync_dist": True, "batch_size": len(real)}
        for name, value in {"d_loss" if critic else "g_loss": loss, **parts}.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name.endswith("loss"), **epoch_mean)

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[LinearLR]]:
        hp = self.hparams
        d_optimizer = torch.optim.Adam(self.discriminator.parameters(), hp.lr_discriminator, tuple(hp.betas))
        g_optimizer = torch.optim.Adam(self.generator.parameters(), hp.lr_generator, tuple(hp.betas))
        total = epochs_to_train(self.trainer) if hp.lr_decay_to < 1 else 1  # constant rates need no length
        schedulers = [LinearLR(opt, 1.0, hp.lr_decay_to, total) for opt in (d_optimizer, g_optimizer)]
        return [d_optimizer, g_optimizer], schedulers  # 1.x's order: the critic first

    def on_train_epoch_end(self) -> None:  # manual optimization: Lightning steps no scheduler, this does
        (d_scheduler, g_scheduler), hp = self.lr_schedulers(), self.hparams
        if hp.scheduler_cadence == "lightning_1x":
            # 1.9.5 (PR #4868): the optimizer active at the epoch's last batch, that batch counted over all
            # epochs (total_batch_idx); every batch steps one optimizer, so that index is global_step - 1
            last = is_critic_batch(self.global_step - 1, hp.n_critic, hp.n_generator)
            (d_scheduler if last else g_scheduler).step()
        else:  # both, for each network that trained: an epoch of n_critic batches or fewer has no G batch
            d_scheduler.step()
            if self.last_batch_idx >= hp.n_critic:
                g_scheduler.step()

    def on_train_start(self) -> None:
        batches, n_critic = self.trainer.num_training_batches, self.hparams.n_critic
        fix = "Use more batches per epoch (limit_train_batches) or a smaller n_critic."
        if not self.trainer.fast_dev_run and batches <= n_critic:
            each = f"each starting with n_critic={n_critic} critic batches (as in 1.x)"
            rank_zero_warn(f"An epoch of {batches} batches, {each}: the generator never steps. {fix}")

    def configure_callbacks(self) -> list[pl.Callback]:
        grid = SampleGrid(self.hparams.grid_every_n_epochs, self.hparams.grid_scale)
        return [grid, SampleQuality(self.hparams.judge_samples)] if self.hparams.judge else [grid]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [-1, 1] as an ``(n, C, H, W)`` tensor."""
        latent = self.hparams.latent_dim
        z = torch.randn(n, latent, generator=generator, device=None if generator else self.device)
        return self.render(z.to(self.device))

    @property
    def sampling_generator(self) -> torch.nn.Module:
        """The generator that draws every sample: the average ``generator_ema``, or the generator without one."""
        return self.generator if self.generator_ema is None else self.generator_ema.module

    @torch.no_grad()
    def render(self, z: torch.Tensor) -> torch.Tensor:
        """The sampling generator's images for latents ``z``, in eval mode: the same for the same latents."""
        generator, was_training = self.sampling_generator, self.sampling_generator.training
        images = generator.eval()(z).float()
        generator.train(was_training)
        return images

    forward = render  # model(z): the samples for latents z

    def exportable(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
        """What ``python -m shared.export`` writes: the sampling generator (latents -> images), with the grid's latents."""
        return self.sampling_generator, (self.fixed_latents,)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Nothing to compute: ``SampleQuality`` reads the real images of each validation batch."""

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self.sample(len(batch[0]))  # one generated image per item of the batch
