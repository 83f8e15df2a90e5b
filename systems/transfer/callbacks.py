"""Staged unfreezing: the callback ``TransferLearner.configure_callbacks`` builds from its hyperparameters."""

from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_info

from systems.transfer.model import BNPolicy, unfreeze


class UnfreezeBackbone(pl.Callback):
    """At epoch ``at_epoch`` the top ``stages`` of the module's ``backbone`` become trainable and join the optimizer
    as a group ``backbone`` at ``lr``; freezing and the BatchNorm policy stay the module's (not so in Lightning's
    ``BackboneFinetuning``: README.md). A group made after fit started needs two things Lightning does not do: on
    resume it must exist again before the optimizer's saved state is loaded (``on_fit_start`` comes between
    ``configure_optimizers`` and that restore); under DDP its gradients must be averaged by hand, since DDP syncs
    only the parameters that required gradients when it wrapped the model."""

    def __init__(self, at_epoch: int, lr: float, stages: int, bn_policy: BNPolicy) -> None:
        self.at_epoch, self.lr, self.stages, self.bn_policy = at_epoch, lr, stages, bn_policy
        self.joined, self.params = False, []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.joined:  # at the milestone, or resumed after it
            self.params = unfreeze(pl_module.backbone, self.stages, self.bn_policy)
            if self.params:  # none when an earlier fit of the same module unfroze them already
                trainer.optimizers[0].add_param_group(
                    {"name": "backbone", "params": self.params, "lr": self.lr}
                )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.joined and trainer.current_epoch >= self.at_epoch:
            self.joined = True
            self.on_fit_start(trainer, pl_module)
            rank_zero_info(
                f"Epoch {trainer.current_epoch}: {len(self.params)} backbone tensors join at lr={self.lr}"
            )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if self.params and trainer.world_size > 1 and dist.is_initialized():
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
            flat = torch.cat([grad.flatten() for grad in grads])
            dist.all_reduce(flat)  # one all-reduce for them all: what DDP's reducer leaves alone
            grads = (flat / trainer.world_size).split([p.numel() for p in self.params])
            for param, grad in zip(self.params, grads, strict=True):
                param.grad = grad.view_as(param).clone()

    def state_dict(self) -> dict[str, Any]:
        return {"joined": self.joined}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.joined = state_dict["joined"]
