"""The transfer system's two callbacks: staged unfreezing, and exporting a pretrained backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from shared.checkpoints import read_checkpoint
from systems.transfer.model import BNPolicy, unfreeze
from systems.transfer.weights import PRETRAINED_BACKBONE, backbone_state


class UnfreezeBackbone(Callback):
    """Staged unfreezing: at epoch ``at_epoch`` the top ``stages`` of the module's ``backbone`` become trainable and
    join the optimizer as a group ``backbone`` at ``lr``. (Lightning's ``BackboneFinetuning`` freezes BatchNorm with
    ``train_bn=True`` whatever its own ``train_bn`` says, and doubles the group's rate every epoch; here freezing
    and the BatchNorm policy are the module's.) A group made after fit started needs two things Lightning does not
    do: on resume it must exist again before the optimizer's saved state is loaded (``on_fit_start`` comes between
    ``configure_optimizers`` and that restore); under DDP its gradients must be averaged by hand, since DDP syncs
    only the parameters that required gradients when it wrapped the model."""

    def __init__(self, at_epoch: int, lr: float, stages: int, bn_policy: BNPolicy) -> None:
        self.at_epoch, self.lr, self.stages, self.bn_policy = at_epoch, lr, stages, bn_policy
        self.joined, self.params = False, []

    def _join(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.params, self.joined = unfreeze(pl_module.backbone, self.stages, self.bn_policy), True
        if self.params:  # none when an earlier fit of the same module unfroze them already
            trainer.optimizers[0].add_param_group({"name": "backbone", "params": self.params, "lr": self.lr})

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
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if not self.params or trainer.world_size == 1 or not dist.is_initialized():
            return
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in self.params]
        )
        dist.all_reduce(flat)  # one all-reduce for them all: what DDP's reducer leaves alone
        for param, grad in zip(
            self.params, (flat / trainer.world_size).split([p.numel() for p in self.params]), strict=True
        ):
            param.grad = grad.view_as(param).clone()

    def state_dict(self) -> dict[str, Any]:
        return {"joined": self.joined}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.joined = state_dict["joined"]


class ExportBackbone(Callback):
    """When pretraining ends, the backbone's weights from the best monitored checkpoint (or as the model ended) go to
    ``path``, a plain torchvision ResNet ``state_dict`` without the classifier, by default the file ``train``
    reads. ``fast_dev_run`` writes nothing: a one-batch backbone must not replace a real one."""

    def __init__(self, path: str = PRETRAINED_BACKBONE) -> None:
        self.path = Path(path)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:
            rank_zero_info(f"fast_dev_run: the backbone is not exported to {self.path}")
        elif trainer.is_global_zero:
            best = next(
                (c.best_model_path for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), ""
            )
            weights = backbone_state(read_checkpoint(best)["state_dict"] if best else pl_module.state_dict())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.detach().cpu() for k, v in weights.items()}, self.path)
            rank_zero_info(f"Backbone of {best or 'the last epoch'} exported to {self.path}")
