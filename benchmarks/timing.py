"""Step timing that does not disturb what it measures, shared by the Trainer runs and the plain loops."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch


class Windows:
    """Wall time per step over ``repeats`` windows of ``window`` steps, after ``warmup`` steps.

    The device is synchronised only at window borders: a sync after every step would serialise the
    host and the GPU and hide exactly the launch overhead a launch-bound step is made of.
    """

    def __init__(self, device: torch.device, warmup: int, window: int, repeats: int) -> None:
        self.device = device
        self.warmup, self.window, self.repeats = warmup, window, repeats
        self.steps = 0
        self.started: float | None = None
        self.per_step: list[float] = []

    @property
    def total_steps(self) -> int:
        return self.warmup + self.window * self.repeats

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def tick(self) -> None:
        """Call once after every step."""
        self.steps += 1
        measured = self.steps - self.warmup
        if measured == 0:
            self.started = self._now()
        elif measured > 0 and measured % self.window == 0 and len(self.per_step) < self.repeats:
            now = self._now()
            self.per_step.append((now - self.started) / self.window)
            self.started = now

    def summary(self) -> dict[str, float]:
        if len(self.per_step) < self.repeats:
            raise RuntimeError(
                f"only {self.steps} of {self.total_steps} steps ran: the loader was too short."
            )
        return {
            "median_step_s": statistics.median(self.per_step),
            "min_step_s": min(self.per_step),
            "max_step_s": max(self.per_step),
        }


class TrainerWindows(pl.Callback):
    """``Windows`` ticked after every training batch, collecting the losses the step returned."""

    def __init__(self, windows: Windows) -> None:
        self.windows = windows
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *_: Any
    ) -> None:
        if isinstance(outputs, dict) and "loss" in outputs:
            self.losses.append(outputs["loss"])
        self.windows.tick()


def losses_as_floats(losses: list[torch.Tensor | float]) -> list[float]:
    """One device-to-host copy at the end instead of one sync per step."""
    if losses and isinstance(losses[0], torch.Tensor):
        return torch.stack([loss.detach().float() for loss in losses]).cpu().tolist()
    return [float(loss) for loss in losses]
