"""The classifier system: train, validate (with a confusion matrix), test, predict."""

from __future__ import annotations

import math
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch.optim.lr_scheduler import CosineAnnealingLR
from torchmetrics.classification import MulticlassAccuracy

from shared.errors import epochs_to_train, require
from systems.classifier.callbacks import ConfusionMatrix
from systems.classifier.model import BufferNormalize, ConvNet, TypeAsNormalize


class Classifier(pl.LightningModule):
    """An image classifier whose network makes its constants on the input's device and dtype.

    Args:
        num_classes: number of classes (linked from the datamodule by the CLI).
        image_shape: ``(channels, height, width)`` of the images (linked from the datamodule's ``dims``).
        mean: per-channel mean of the images, used by the network's first layer (linked from the data).
        std: per-channel standard deviation of the images (linked from the data).
        width: channels of the first conv blocks (the last two have twice as many).
        dropout: dropout before the linear head.
        normalization: ``type_as`` makes the constants in ``forward``; ``buffer`` registers them.
        lr: AdamW learning rate (``Tuner.lr_find`` writes here).
        weight_decay: AdamW weight decay.
        scheduler_interval: step the cosine schedule every ``epoch`` or every optimizer ``step``.
        skip_nonfinite: skip (and count) a batch whose loss is NaN or inf instead of training on it,
            undoing what its forward pass did to BatchNorm statistics; costs a copy of the buffers and
            one device-to-host sync per step.
        channels_last: NHWC weights and images: at 28 px on this CPU, 1 thread, 1.4x the images per second
            (2x at batch 64), and the layout bf16/fp16 convolutions need for tensor cores.
        compile: ``torch.compile`` the network in place (``nn.Module.compile``): checkpoints keep their keys and
            load with or without it; the step around the network (the non-finite skip, the metrics) stays eager.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        mean: tuple[float, ...] = (0.3053,),
        std: tuple[float, ...] = (0.3760,),
        width: int = 32,
        dropout: float = 0.1,
        normalization: Literal["type_as", "buffer"] = "type_as",
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        skip_nonfinite: bool = True,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        require(num_classes >= 2, f"num_classes must be 2 or more, got {num_classes}.")
        require(width >= 1, f"model.width must be 1 or more, got {width}.")
        require(lr > 0, f"model.lr must be > 0, got {lr}.")
        require(0 <= dropout < 1, f"model.dropout must be in [0, 1), got {dropout}.")
        per_channel = f"mean {mean} and std {std} need one value per channel ({image_shape[0]})"
        require(len(mean) == len(std) == image_shape[0], f"{per_channel}: let the CLI link them.")
        normalize = TypeAsNormalize(mean, std) if normalization == "type_as" else BufferNormalize(mean, std)
        self.net = ConvNet(normalize, image_shape[0], num_classes, width, dropout)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        # validate_args=False: its label checks would sync the GPU with the host at every training step
        self.train_acc = MulticlassAccuracy(num_classes, validate_args=False)
        self.val_acc, self.test_acc = MulticlassAccuracy(num_classes), MulticlassAccuracy(num_classes)
        self.skipped_batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        # the forward pass already moves BatchNorm's running statistics: keep a copy to undo a bad batch
        buffers = [b.clone() for b in self.net.buffers()] if self.hparams.skip_nonfinite else []
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if self.hparams.skip_nonfinite:
            # every process must agree, or DDP would wait forever for the gradients of the one that skips
            finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True)
            self.log(
                "train/skipped_batches", float(not finite), on_step=False, on_epoch=True, reduce_fx="sum"
            )
            if not finite:
                for buffer, saved in zip(self.net.buffers(), buffers, strict=True):
                    buffer.copy_(saved)
                self.skipped_batches += 1
                rank_zero_warn(f"Non-finite loss at epoch {self.current_epoch}, batch {batch_idx}: skipped.")
                # 1.x and 2.x agree: returning None skips backward and the optimizer step for this batch
                return None
        self._record("train", logits, y, loss)
        return loss

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> tuple[torch.Tensor, ...]:
        x, y = batch
        logits = self(x)
        self._record("val", logits, y, F.cross_entropy(logits, y))
        return logits.argmax(dim=1), y  # for the confusion matrix (callbacks.py)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self._record("test", logits, y, F.cross_entropy(logits, y))

    def _record(self, stage: str, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """What train, validation and test log alike: the loss and the accuracy as epoch means (and the
        training loss per step too); evaluation losses are averaged over all processes."""
        accuracy = getattr(self, f"{stage}_acc")
        accuracy(logits, y)
        training = stage == "train"
        self.log(
            f"{stage}/loss", loss, on_step=training, on_epoch=True, prog_bar=training, sync_dist=not training
        )
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=stage == "val")

    def configure_callbacks(self) -> list[pl.Callback]:
        return [ConfusionMatrix()]

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities for a batch of images (a bare tensor or an ``(images, labels)`` pair)."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(dim=1)

    def exportable(self, batch: Any) -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
        """What ``python -m shared.export`` writes: the network (images in the data's range -> logits; it standardises
        them itself) and its input, the batch's images."""
        return self.net, (batch[0],)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.saved_interval = checkpoint.get("hyper_parameters", {}).get("scheduler_interval")

    def on_train_start(self) -> None:  # resumed: the saved position counts epochs or steps, it cannot convert
        now = self.hparams.scheduler_interval
        saved = getattr(self, "saved_interval", None) or now
        units = f"The checkpoint steps its schedule every {saved} and this run every {now}"
        require(saved == now, f"{units}: resume with --model.scheduler_interval={saved}.")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), hp.lr, weight_decay=hp.weight_decay)
        interval = self.hparams.scheduler_interval
        if interval == "epoch":
            periods = epochs_to_train(self.trainer)
        else:
            periods = self.trainer.estimated_stepping_batches
            unbounded = (
                "scheduler_interval='step' sizes the schedule by the steps to train, which are unbounded"
            )
            require(math.isfinite(periods), f"{unbounded}: set --trainer.max_epochs or --trainer.max_steps.")
        scheduler = CosineAnnealingLR(optimizer, T_max=max(1, int(periods)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
