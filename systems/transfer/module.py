"""The transfer system's LightningModule; staged unfreezing: callbacks.py; starting weights: weights.py."""

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from shared.errors import require
from systems.transfer.callbacks import UnfreezeBackbone
from systems.transfer.model import Arch, BNPolicy, Standardize, build_backbone, set_modes, unfreeze
from systems.transfer.weights import (
    PRETRAINED_BACKBONE,
    WEIGHT_NAME,
    input_stats,
    load_weights,
    weight_file,
    weight_names,
)


class TransferLearner(pl.LightningModule):
    """A pretrained ``backbone`` (a ResNet or EfficientNet-lite0), frozen, under a new trainable linear ``head``.
    Frozen means four things, all on this first screen: ``requires_grad=False``; features computed under
    ``no_grad``; only trainable parameters in the optimizer; eval mode every epoch, so BatchNorm keeps its
    statistics (unless ``bn_policy`` says otherwise).

    Args:
        num_classes: classes of the target task (linked from the datamodule).
        image_shape: ``(channels, height, width)`` of the images (linked); grey ones get three channels.
        mean: per-channel mean of the images, standardised away before the backbone (linked); named weights
            replace it (and ``std``) with the mean and std of the input they were trained on.
        std: per-channel standard deviation of the images (linked).
        arch: a torchvision ResNet or ``efficientnet_lite0``.
        weights: loaded when ``fit`` starts: a file (by default what ``pretrain`` exports), a weight name of ``arch``
            (a ResNet's ``IMAGENET1K_V1``; EfficientNet-lite0's ``IMAGENET1K``, from the ``pretrained`` extra), or
            null (random).
        unfreeze_at_epoch: null: frozen throughout; 0: the unfrozen stages train from the start; N: they join then.
        unfreeze_stages: the backbone's top stages that unfreezing trains, of five (model.py): 1 is a ResNet's
            ``layer4``, 5 all of it.
        bn_policy: ``frozen``: BatchNorm's statistics and weights fixed even in unfrozen stages; ``train``: both
            adapt to the target data (needed from random weights).
        lr: AdamW learning rate of the head.
        backbone_lr: AdamW learning rate of the backbone's parameter group (usually lower than ``lr``).
        weight_decay: AdamW weight decay of both groups.
        dropout: dropout before the linear head.
        channels_last: NHWC weights and images, the layout bf16/fp16 convolutions need for tensor cores.
        compile: ``torch.compile`` the backbone and the head in place (``nn.Module.compile``): checkpoints keep their
            keys and load with or without it.
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
        bn_policy: BNPolicy = "frozen",
        lr: float = 0.03,
        backbone_lr: float = 1e-4,
        weight_decay: float = 1e-4,
        dropout: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check(self.hparams)  # what the types cannot say: the one block of checks, at the end of this file
        self.normalize = Standardize(*(input_stats(arch, weights) or (mean, std)))
        self.backbone, width = build_backbone(arch)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        self.backbone.requires_grad_(False)  # frozen; unfreezing makes the top stages trainable (0: now)
        if unfreeze_at_epoch == 0:
            unfreeze(self.backbone, unfreeze_stages, bn_policy)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
            self.backbone.compile()
            self.head.compile()
        self.weights_loaded = weights is None  # True once the backbone holds them (`weights` or a checkpoint)
        # validate_args=False: its label checks would sync the GPU with the host at every training step
        self.train_acc = MulticlassAccuracy(num_classes, validate_args=False)
        self.val_acc, self.test_acc = MulticlassAccuracy(num_classes), MulticlassAccuracy(num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # partly trainable: autograd records nothing before the first trainable layer anyway; frozen: no_grad,
        # not inference_mode, for the head saves these features for its own backward pass
        trainable = any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        logits, accuracy, train = self(batch[0]), getattr(self, f"{stage}_acc"), stage == "train"
        loss = nn.functional.cross_entropy(logits, batch[1])
        accuracy(logits, batch[1])
        self.log(f"{stage}/loss", loss, on_step=train, on_epoch=True, prog_bar=train, sync_dist=not train)
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:  # images, or (images, labels)
        return self(batch[0] if isinstance(batch, list | tuple) else batch).softmax(dim=1)

    def exportable(self, batch: Any) -> tuple[nn.Module, tuple[torch.Tensor]]:
        """What ``python -m shared.export`` writes: ``forward`` as one network (images in the data's range -> logits),
        with the batch's images."""
        return nn.Sequential(self.normalize, self.backbone, self.head), (batch[0],)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters only: the head and the backbone in named groups."""
        groups = [{"name": "head", "params": list(self.head.parameters()), "lr": self.hparams.lr}]
        if backbone := [p for p in self.backbone.parameters() if p.requires_grad]:
            groups.append({"name": "backbone", "params": backbone, "lr": self.hparams.backbone_lr})
        return torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)

    def on_train_epoch_start(self) -> None:
        # every epoch, after the callbacks' (a stage UnfreezeBackbone just unfroze trains): whatever sets the whole
        # module to train mode after validation (model.train(), on_validation_model_train) would let BatchNorm drift
        set_modes(self.backbone, self.hparams.bn_policy)

    on_train_start = on_train_epoch_start  # a run resumed mid-epoch has no epoch start

    def configure_callbacks(self) -> list[pl.Callback]:  # staged unfreezing; null: never, 0: in __init__
        hp, at = self.hparams, self.hparams.unfreeze_at_epoch
        return [UnfreezeBackbone(at, hp.backbone_lr, hp.unfreeze_stages, hp.bn_policy)] if at else []

    def prepare_data(self) -> None:
        """Before fit writes anything: stop at a missing weight file, download named ones once per machine."""
        if self.trainer.state.fn == "fit" and not self.weights_loaded:
            weight_file(self.hparams.arch, self.hparams.weights)

    def load_pretrained(self) -> None:
        """At fit start, unless a checkpoint was restored (resume, load_from_checkpoint): it brings its own."""
        if not self.weights_loaded:
            load_weights(self.backbone, self.hparams.arch, self.hparams.weights)
            rank_zero_info(f"Backbone weights loaded from {self.hparams.weights}")
            self.weights_loaded = True

    on_fit_start = load_pretrained

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.weights_loaded = True


def check(hp: Any) -> None:
    """What the types cannot say (the parser refuses an ``arch`` or ``bn_policy`` that its Literal lacks)."""
    require(hp.num_classes >= 2, f"num_classes must be at least 2, got {hp.num_classes}.")
    channels = hp.image_shape[0] in (1, 3) and len(hp.mean) == len(hp.std) == hp.image_shape[0]
    got = f"image_shape {hp.image_shape}, mean {hp.mean}, std {hp.std}: let the CLI link them from the data"
    require(channels, f"The backbone takes grey or RGB images with one mean and std per channel, got {got}.")
    names = weight_names(hp.arch)  # a path is checked when fit reads it
    named = hp.weights is None or not WEIGHT_NAME.fullmatch(hp.weights) or hp.weights in names
    require(named, f"{hp.arch} has no weights called {hp.weights}: use one of {', '.join(names)}, or a file.")
    at, stages = hp.unfreeze_at_epoch, hp.unfreeze_stages
    require(at is None or at >= 0, f"unfreeze_at_epoch must be null or 0 or more, got {at}.")
    require(1 <= stages <= 5, f"unfreeze_stages must be 1 (the last stage) to 5 (all), got {stages}.")
    got = f"lr={hp.lr}, backbone_lr={hp.backbone_lr}, dropout={hp.dropout}"
    rates = hp.lr > 0 and hp.backbone_lr > 0 and 0 <= hp.dropout < 1
    require(rates, f"lr and backbone_lr must be > 0 and dropout in [0, 1), got {got}.")
