"""The transfer system: a pretrained ResNet ``backbone``, frozen, under a new trainable ``head``.

Frozen means four things, all on this first screen: ``requires_grad=False``; features computed under ``no_grad``;
only trainable parameters in the optimizer; eval mode in every epoch, so that BatchNorm keeps its pretrained
statistics (unless ``bn_policy`` says otherwise). Staged unfreezing is ``callbacks.py``, the starting weights
``weights.py``, the same training step without Lightning ``plain.py``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from shared.errors import require
from systems.transfer.callbacks import UnfreezeBackbone
from systems.transfer.model import (
    STAGES,
    Arch,
    BatchNormPolicy,
    Standardize,
    build_backbone,
    set_modes,
    unfreeze,
)
from systems.transfer.weights import (
    PRETRAINED_BACKBONE,
    is_weight_name,
    load_weights,
    weight_file,
    weight_names,
)


class TransferLearner(pl.LightningModule):
    """A ResNet ``backbone`` from pretrained weights, and a new linear ``head`` for the target task.

    Args:
        num_classes: classes of the target task (linked from the datamodule).
        image_shape: ``(channels, height, width)`` of the images (linked); grey ones get three channels.
        mean: per-channel mean of the images, standardised away before the backbone (linked).
        std: per-channel standard deviation of the images (linked).
        arch: the torchvision ResNet.
        weights: the backbone's starting weights, read when ``fit`` starts: a file (by default the one ``pretrain``
            exports; a checkpoint of this system; a torchvision ResNet ``state_dict``), a torchvision weight name of
            ``arch`` (``IMAGENET1K_V1``, ``DEFAULT``), or null for random weights.
        unfreeze_at_epoch: null keeps the backbone frozen; 0 trains the unfrozen stages from the start; N > 0 lets
            them join at epoch N, in their own parameter group (staged unfreezing).
        unfreeze_stages: how many of the backbone's five stages (stem, layer1-4), from the top, unfreezing makes
            trainable: 1 is ``layer4``, 5 the whole backbone.
        bn_policy: ``frozen``: BatchNorm in eval mode, statistics and weights fixed even in unfrozen stages;
            ``train``: in train mode, adapting to the target data (needed from random weights).
        lr: AdamW learning rate of the head.
        backbone_lr: AdamW learning rate of the backbone's parameter group (usually lower than ``lr``).
        weight_decay: AdamW weight decay of both groups.
        dropout: dropout before the linear head.
        channels_last: NHWC weights and images, the layout bf16/fp16 convolutions need for tensor cores.
    """

    def __init__(
        self,
        num_classes: int = 5,
        image_shape: tuple[int, int, int] = (1, 32, 32),
        mean: tuple[float, ...] = (0.3053,),
        std: tuple[float, ...] = (0.3760,),
        arch: Arch = "resnet18",
        weights: str | None = PRETRAINED_BACKBONE,
        unfreeze_at_epoch: int | None = None,
        unfreeze_stages: int = 1,
        bn_policy: BatchNormPolicy = "frozen",
        lr: float = 0.03,
        backbone_lr: float = 1e-4,
        weight_decay: float = 1e-4,
        dropout: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check(self.hparams)  # what the types cannot say: the one block of checks, at the end of this file
        self.normalize = Standardize(mean, std)
        self.backbone, width = build_backbone(arch)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        self.backbone.requires_grad_(False)  # frozen; unfreezing makes the top stages trainable (0: now)
        if unfreeze_at_epoch == 0:
            unfreeze(self.backbone, unfreeze_stages, bn_policy)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.weights_loaded = (
            weights is None
        )  # True once the backbone holds them, from `weights` or a checkpoint
        # validate_args=False: its checks of the labels would sync the GPU with the host at every training step
        self.train_acc = MulticlassAccuracy(num_classes, validate_args=False)
        self.val_acc, self.test_acc = MulticlassAccuracy(num_classes), MulticlassAccuracy(num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features of a batch of images, ``(N, width)``."""
        x = self.normalize(x)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # partly trainable: autograd records nothing before the first trainable layer anyway; frozen: no_grad, not
        # inference_mode, for the head saves these features for its own backward pass
        with torch.set_grad_enabled(
            torch.is_grad_enabled() and any(p.requires_grad for p in self.backbone.parameters())
        ):
            return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        """What training, validation and test share: the loss and the accuracy, logged as ``stage/loss``, ``/acc``."""
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        accuracy = getattr(self, f"{stage}_acc")
        accuracy(logits, y)
        training = stage == "train"
        self.log(
            f"{stage}/loss", loss, on_step=training, on_epoch=True, prog_bar=training, sync_dist=not training
        )
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities for a batch of images (a bare tensor or an ``(images, labels)`` pair)."""
        return self(batch[0] if isinstance(batch, list | tuple) else batch).softmax(dim=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters only: the head and the backbone in named groups."""
        groups = [{"name": "head", "params": list(self.head.parameters()), "lr": self.hparams.lr}]
        if backbone := [p for p in self.backbone.parameters() if p.requires_grad]:
            groups.append({"name": "backbone", "params": backbone, "lr": self.hparams.backbone_lr})
        return torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)

    def on_train_epoch_start(self) -> None:
        # every epoch, after the callbacks' (a stage UnfreezeBackbone just unfroze trains): Lightning restores each
        # submodule's mode after validation, but whatever sets the whole module to train mode in between
        # (model.train(), an overridden on_validation_model_train) would let frozen BatchNorm drift
        set_modes(self.backbone, self.hparams.bn_policy)

    def on_train_start(self) -> None:
        set_modes(
            self.backbone, self.hparams.bn_policy
        )  # a run resumed mid-epoch has no epoch start (Lightning)

    def configure_callbacks(self) -> list[Callback]:
        """Staged unfreezing: a callback of this system's own, made from the hyper-parameters."""
        hp = self.hparams
        return (
            [UnfreezeBackbone(hp.unfreeze_at_epoch, hp.backbone_lr, hp.unfreeze_stages, hp.bn_policy)]
            if hp.unfreeze_at_epoch
            else []
        )

    # --- the starting weights (weights.py): read once when fit starts; a checkpoint brings its own ---

    def prepare_data(self) -> None:
        """Before ``fit`` writes anything: stop at a missing weight file, download named weights once per machine."""
        if self.trainer.state.fn == "fit" and not self.weights_loaded:
            weight_file(self.hparams.arch, self.hparams.weights)

    def on_fit_start(self) -> None:
        if (
            not self.weights_loaded
        ):  # after a checkpoint was restored (resume, load_from_checkpoint) its weights win
            self.load_pretrained()
            rank_zero_info(f"Backbone weights loaded from {self.hparams.weights}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.weights_loaded = True

    def load_pretrained(self) -> None:
        """Copy the starting weights that ``weights`` names into the backbone (``fit`` does as it starts)."""
        if self.hparams.weights is not None:
            load_weights(self.backbone, self.hparams.arch, self.hparams.weights)
        self.weights_loaded = True


def check(hp: Any) -> None:
    """The mistakes the types cannot catch, each with the fix (the parser refuses an ``arch`` or ``bn_policy`` its
    Literal does not list; data files and weights are checked as they are read)."""
    require(hp.num_classes >= 2, f"num_classes must be at least 2, got {hp.num_classes}.")
    require(
        hp.image_shape[0] in (1, 3) and len(hp.mean) == len(hp.std) == hp.image_shape[0],
        f"A ResNet takes grey or RGB images with one mean and std per channel, got image_shape {hp.image_shape}, "
        f"mean {hp.mean}, std {hp.std}: let the CLI link them from the datamodule.",
    )
    names = weight_names(hp.arch)
    require(
        hp.weights is None or not is_weight_name(hp.weights) or hp.weights in names,
        f"{hp.arch} has no torchvision weights called {hp.weights}: use one of {', '.join(names)}, or a file's path.",
    )
    require(
        hp.unfreeze_at_epoch is None or hp.unfreeze_at_epoch >= 0,
        f"unfreeze_at_epoch must be null or 0 or more, got {hp.unfreeze_at_epoch}.",
    )
    require(
        1 <= hp.unfreeze_stages <= len(STAGES),
        f"unfreeze_stages must be 1 (layer4) to {len(STAGES)} (all), got {hp.unfreeze_stages}.",
    )
    require(
        hp.lr > 0 and hp.backbone_lr > 0 and 0 <= hp.dropout < 1,
        f"lr and backbone_lr must be > 0 and dropout in [0, 1), got lr={hp.lr}, backbone_lr={hp.backbone_lr}, "
        f"dropout={hp.dropout}.",
    )
