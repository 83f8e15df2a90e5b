"""The transfer system: a pretrained ResNet backbone, frozen or joining later, under a new trainable head."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchmetrics.classification import MulticlassAccuracy

from shared.errors import UserError
from systems.transfer.callbacks import UnfreezeBackbone
from systems.transfer.model import STAGES, Standardize, build_backbone, last_stages
from systems.transfer.weights import is_weight_name, load_weights, weight_file, weight_names


class TransferLearner(pl.LightningModule):
    """A ResNet ``backbone`` starting from pretrained weights, and a new linear ``head`` for the target task.

    Frozen means four things here: the backbone's parameters have ``requires_grad=False``; the optimizer
    holds only trainable parameters; its features are computed under ``torch.no_grad()``; and it runs in
    eval mode in every epoch, so that BatchNorm keeps the statistics it was pretrained with (unless
    ``bn_policy`` says otherwise).

    Args:
        num_classes: classes of the target task (linked from the datamodule by the CLI).
        image_shape: ``(channels, height, width)`` of the images (linked from the datamodule's ``dims``); grey
            images are repeated into the three channels a ResNet takes.
        mean: per-channel mean of the images, standardised away before the backbone (linked from the data).
        std: per-channel standard deviation of the images (linked from the data).
        arch: the torchvision ResNet: ``resnet18``, ``resnet34`` or ``resnet50``.
        weights: the backbone's starting weights: a torchvision weight name of ``arch`` (``IMAGENET1K_V1``,
            ``DEFAULT``; downloaded when online, read from the torch hub cache offline), the path of a weight
            file (the ``backbone.pt`` that ``pretrain`` writes, a checkpoint of this system, a torchvision
            ResNet ``state_dict``), or null for random weights. Read when ``fit`` starts; a checkpoint brings
            its own weights, so ``load_from_checkpoint`` never needs this file or the network (a resumed
            ``fit`` checks that it exists: pass null there if it is gone).
        unfreeze_at_epoch: null keeps the backbone frozen throughout; 0 trains the unfrozen stages from the
            start (how ``pretrain`` and the from-scratch baseline run); N > 0 keeps it frozen for epochs
            0..N-1, then the stages join training in their own parameter group (staged unfreezing).
        unfreeze_stages: how many of the backbone's five stages (stem, layer1, ..., layer4), counted from the
            top, unfreezing makes trainable: 1 is ``layer4`` alone, 5 the whole backbone.
        bn_policy: the backbone's BatchNorm layers. ``frozen``: always in eval mode, normalising with the
            pretrained running statistics and never updating them, and with weight and bias fixed even in
            unfrozen stages (torchvision's ``FrozenBatchNorm2d`` behaviour; right for small batches and for
            features that do not depend on the batch). ``train``: in train mode, normalising with batch
            statistics and updating the running ones on the target data even while the convolutions stay
            frozen, with weight and bias training wherever their stage does (needed from random weights).
        lr: AdamW learning rate of the head.
        backbone_lr: AdamW learning rate of the backbone's parameter group (usually lower than ``lr``).
        weight_decay: AdamW weight decay of both groups.
        dropout: dropout before the linear head.
        channels_last: keep the convolution weights and the images in ``channels_last`` (NHWC) memory
            format, the layout that lets bf16/fp16 convolutions run on tensor cores.
    """

    def __init__(
        self,
        num_classes: int = 5,
        image_shape: tuple[int, int, int] = (1, 32, 32),
        mean: tuple[float, ...] = (0.3053,),
        std: tuple[float, ...] = (0.3760,),
        arch: Literal["resnet18", "resnet34", "resnet50"] = "resnet18",
        weights: str | None = None,
        unfreeze_at_epoch: int | None = None,
        unfreeze_stages: int = 1,
        bn_policy: Literal["frozen", "train"] = "frozen",
        lr: float = 1e-2,
        backbone_lr: float = 1e-4,
        weight_decay: float = 1e-4,
        dropout: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if num_classes < 2:
            raise UserError(f"num_classes must be at least 2, got {num_classes}.")
        if image_shape[0] not in (1, 3) or len(mean) != image_shape[0] or len(std) != image_shape[0]:
            raise UserError(
                f"A ResNet takes grey or RGB images with one mean and std per channel, got image_shape "
                f"{image_shape}, mean {mean}, std {std}: let the CLI link them from the datamodule."
            )
        if weights is not None and is_weight_name(weights) and weights not in weight_names(arch):
            raise UserError(
                f"{arch} has no torchvision weights called {weights}: use one of "
                f"{', '.join(weight_names(arch))}, or the path of a weight file."
            )
        if unfreeze_at_epoch is not None and unfreeze_at_epoch < 0:
            raise UserError(f"unfreeze_at_epoch must be null or 0 or more, got {unfreeze_at_epoch}.")
        if not 1 <= unfreeze_stages <= len(STAGES):
            raise UserError(
                f"unfreeze_stages must be 1 (layer4) to {len(STAGES)} (all), got {unfreeze_stages}."
            )
        if bn_policy not in ("frozen", "train"):
            raise UserError(f"bn_policy must be 'frozen' or 'train', got {bn_policy!r}.")
        if lr <= 0 or backbone_lr <= 0 or not 0 <= dropout < 1:
            raise UserError(
                f"lr and backbone_lr must be > 0 and dropout in [0, 1), got lr={lr}, "
                f"backbone_lr={backbone_lr}, dropout={dropout}."
            )
        self.normalize = Standardize(mean, std)
        self.backbone, width = build_backbone(arch)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        self.backbone.requires_grad_(False)
        if unfreeze_at_epoch == 0:
            self.unfreeze_backbone()
        if channels_last:
            self.to(memory_format=torch.channels_last)
        # True once the backbone holds its starting weights, from `weights` or from a checkpoint
        self.weights_loaded = weights is None
        self.train_acc = MulticlassAccuracy(num_classes)
        self.val_acc = MulticlassAccuracy(num_classes)
        self.test_acc = MulticlassAccuracy(num_classes)

    # ---- freezing --------------------------------------------------------------------------------------

    def unfreeze_backbone(self) -> list[nn.Parameter]:
        """Make the last ``unfreeze_stages`` stages trainable and return the parameters that were frozen.

        Under ``bn_policy=frozen`` their BatchNorm layers stay frozen (weights and statistics).
        """
        joined = []
        for stage in last_stages(self.backbone, self.hparams.unfreeze_stages):
            for module in stage.modules():
                if isinstance(module, _BatchNorm) and self.hparams.bn_policy == "frozen":
                    continue
                for param in module.parameters(recurse=False):
                    if not param.requires_grad:
                        param.requires_grad_(True)
                        joined.append(param)
        return joined

    def set_backbone_mode(self) -> None:
        """Frozen stages in eval mode, trainable ones in train mode, BatchNorm layers as ``bn_policy`` says.

        Called at the start of every training epoch. Lightning 2.x keeps each submodule's mode when fit
        starts and restores it after validation, but whatever switches the whole module to train mode in
        between (``model.train()``, an overridden ``on_validation_model_train``, ``to_onnx`` and
        ``to_torchscript``, which end with ``self.train(mode)``) would otherwise let the frozen BatchNorm
        layers drift to the target data's statistics.
        """
        for stage in STAGES:
            modules = [getattr(self.backbone, name) for name in stage]
            trainable = any(p.requires_grad for module in modules for p in module.parameters())
            for module in modules:
                module.train(trainable)
        for module in self.backbone.modules():
            if isinstance(module, _BatchNorm):
                module.train(self.hparams.bn_policy == "train")

    def on_train_start(self) -> None:
        # a run resumed in the middle of an epoch gets no on_train_epoch_start for that epoch (Lightning's
        # rule): without this its frozen BatchNorm layers would train on the rest of the epoch
        self.set_backbone_mode()

    def on_train_epoch_start(self) -> None:
        # runs after the callbacks' hook: a stage that UnfreezeBackbone has just unfrozen gets train mode
        self.set_backbone_mode()

    def configure_callbacks(self) -> list[Callback]:
        """Staged unfreezing: a callback of this system's own, built from the hyper-parameters."""
        at_epoch = self.hparams.unfreeze_at_epoch
        return [UnfreezeBackbone(at_epoch, self.hparams.backbone_lr)] if at_epoch else []

    # ---- the starting weights (weights.py) -----------------------------------------------------------

    def prepare_data(self) -> None:
        """Before ``fit`` writes anything: stop at a missing weight file, and download named torchvision
        weights once per machine (not once per process)."""
        if self.trainer.state.fn == TrainerFn.FITTING and not self.weights_loaded:
            weight_file(self.hparams.arch, self.hparams.weights)

    def load_pretrained(self) -> None:
        """Copy the starting weights that ``weights`` names into the backbone (``fit`` does as it starts)."""
        if self.hparams.weights is not None:
            load_weights(self.backbone, self.hparams.arch, self.hparams.weights)
        self.weights_loaded = True

    def on_fit_start(self) -> None:
        # after a checkpoint was restored (resume, or a model from load_from_checkpoint) its weights win
        if not self.weights_loaded:
            self.load_pretrained()
            rank_zero_info(f"Backbone weights loaded from {self.hparams.weights}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.weights_loaded = True

    # ---- the system ------------------------------------------------------------------------------------

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features of a batch of images, ``(N, width)``."""
        x = self.normalize(x)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if any(p.requires_grad for p in self.backbone.parameters()):
            # partly trainable: autograd records nothing before the first trainable layer anyway
            return self.backbone(x)
        # no_grad rather than inference_mode: the head saves these features for its own backward pass,
        # which inference tensors may not take part in
        with torch.no_grad():
            return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_acc(logits, y)
        self.log("test/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("test/acc", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities for a batch of images (a bare tensor or an ``(images, labels)`` pair)."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(dim=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters only: the head and the backbone in named groups."""
        groups = [{"name": "head", "params": list(self.head.parameters()), "lr": self.hparams.lr}]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"name": "backbone", "params": backbone, "lr": self.hparams.backbone_lr})
        return torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)
