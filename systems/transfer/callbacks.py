"""The transfer system's two callbacks: staged unfreezing, and exporting a pretrained backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info
from torch.optim import Optimizer

from shared.checkpoints import read_checkpoint
from systems.transfer.model import BatchNormPolicy, unfreeze
from systems.transfer.weights import PRETRAINED_BACKBONE, backbone_state


class UnfreezeBackbone(Callback):
    """Staged unfreezing: at epoch ``at_epoch`` the top ``stages`` of the module's ``backbone`` become
    trainable (``model.unfreeze``), and their parameters join the (first) optimizer as a new group
    ``backbone`` at ``lr``. ``TransferLearner.configure_callbacks`` builds it from its hyper-parameters.

    Why not Lightning's ``BackboneFinetuning``: its ``freeze_before_training`` freezes with
    ``train_bn=True`` whatever its own ``train_bn`` says, so the "frozen" backbone's BatchNorm layers keep
    ``requires_grad`` (an optimizer over the trainable parameters trains them) and update their running
    statistics from the first epoch; and ``BaseFinetuning.freeze(train_bn=False)`` only sets
    ``track_running_stats=False`` on a layer left in train mode, so it normalises with batch statistics in
    training and with the stored ones in validation. It also unfreezes the whole backbone and doubles the
    group's learning rate every epoch (its default ``lambda_func``). Here freezing and the BatchNorm policy
    belong to the module (``bn_policy``), and this callback only adds the stages the module names, at one
    learning rate.

    A group created after fit started needs two things Lightning does not do for it:
    - on resume, the group must exist again before the optimizer's saved state (which has it) is loaded:
      ``on_fit_start`` runs after ``configure_optimizers`` and before that restore, so it re-adds the group;
    - under DDP the gradients of these parameters must be averaged by hand: DDP's reducer syncs only the
      parameters that required gradients when it wrapped the model, so without this each process would
      train its own backbone.
    """

    def __init__(self, at_epoch: int, lr: float, stages: int, bn_policy: BatchNormPolicy) -> None:
        self.at_epoch, self.lr, self.stages, self.bn_policy = at_epoch, lr, stages, bn_policy
        self.joined = False
        self.params: list[torch.nn.Parameter] = []

    def _join(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.params = unfreeze(pl_module.backbone, self.stages, self.bn_policy)
        if self.params:  # none when an earlier fit of the same module unfroze them already
            trainer.optimizers[0].add_param_group({"name": "backbone", "params": self.params, "lr": self.lr})
        self.joined = True

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.joined:
            self._join(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.joined and trainer.current_epoch >= self.at_epoch:
            self._join(trainer, pl_module)
            rank_zero_info(
                f"Epoch {trainer.current_epoch}: {len(self.params)} backbone tensors join at lr={self.lr}"
            )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if not self.params or trainer.world_size == 1 or not dist.is_available() or not dist.is_initialized():
            return
        # average what DDP's reducer leaves alone (see above), all tensors in one all_reduce
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= trainer.world_size
        for param, chunk in zip(self.params, flat.split([p.numel() for p in self.params]), strict=True):
            if param.grad is None:
                param.grad = chunk.view_as(param).clone()
            else:
                param.grad.copy_(chunk.view_as(param))

    def state_dict(self) -> dict[str, Any]:
        return {"joined": self.joined}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.joined = state_dict["joined"]


class ExportBackbone(Callback):
    """When pretraining ends, write the backbone's weights to ``path``; the default, ``PRETRAINED_BACKBONE``,
    is what ``train`` reads by default.

    The weights come from the best checkpoint of the monitored ``checkpoint`` callback when there is one,
    otherwise from the model as it ended. The file is a plain torchvision ResNet ``state_dict`` without the
    classifier (``resnet18().load_state_dict(state, strict=False)`` takes it too). ``fast_dev_run`` writes
    nothing, as it writes no checkpoints: a one-batch backbone must not replace a real one.
    """

    def __init__(self, path: str = PRETRAINED_BACKBONE) -> None:
        self.path = Path(path)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:
            rank_zero_info(f"fast_dev_run: the backbone is not exported to {self.path}")
            return
        if not trainer.is_global_zero:
            return
        best = next(
            (
                c.best_model_path
                for c in trainer.checkpoint_callbacks
                if isinstance(c, ModelCheckpoint) and c.monitor
            ),
            "",
        )
        weights = read_checkpoint(best)["state_dict"] if best else pl_module.state_dict()
        state = {k: v.detach().cpu() for k, v in backbone_state(weights).items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.path)
        rank_zero_info(f"Backbone of {best or 'the last epoch'} exported to {self.path}")
