"""What the benchmarks time: each system's real LightningModule, synthetic batches of a chosen size, and
the same training step written as a plain PyTorch loop (for the parity benchmark).

A workload's sizes come in presets (``gpu``: sized to fill an H100 as in PERFORMANCE.md; ``tiny``: a CPU
smoke run) and can be overridden from the command line (``--size classifier.batch=512``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from benchmarks.timing import Windows


@dataclass(frozen=True)
class Precision:
    """One precision mode, set the same way for the Trainer and for the plain loop."""

    name: str
    lightning: str  # the Trainer's precision flag
    tf32: bool = False
    channels_last: bool = False
    gpu_only: bool = False

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(self.lightning)

    def autocast(self, device: torch.device) -> AbstractContextManager:
        dtype = self.autocast_dtype
        return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()

    def apply_tf32(self) -> None:
        """TF32 for matmuls and cuDNN convolutions together (cuDNN's own default is on)."""
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32


PRECISIONS = {
    p.name: p
    for p in (
        Precision("fp32", "32-true"),
        Precision("tf32", "32-true", tf32=True, gpu_only=True),
        Precision("16-mixed", "16-mixed", gpu_only=True),
        Precision("bf16-mixed", "bf16-mixed"),
        Precision("bf16-mixed+channels_last", "bf16-mixed", channels_last=True),
    )
}


class Batches(Dataset):
    """``length`` batches cycling through a few pre-made ones: no data work in the timed loop."""

    def __init__(self, batches: list[Any], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.batches[index % len(self.batches)]


def loader(batches: list[Any], length: int) -> DataLoader:
    """A DataLoader yielding whole pre-made batches (``batch_size=None``: no collate, no copy)."""
    return DataLoader(Batches(batches, length), batch_size=None, shuffle=False)


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    if isinstance(batch, torch.Tensor):
        non_blocking = batch.is_pinned()
        if channels_last and batch.dim() == 4:
            return batch.to(device, non_blocking=non_blocking, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=non_blocking)
    return type(batch)(to_device(b, device, channels_last) for b in batch)


class GradScaling:
    """A GradScaler for fp16 autocast, a pass-through otherwise (what Lightning's 16-mixed does)."""

    def __init__(self, precision: Precision, device: torch.device) -> None:
        self.scaler = torch.amp.GradScaler(device.type) if precision.autocast_dtype == torch.float16 else None

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


@dataclass(frozen=True)
class Workload:
    """A system as the benchmarks see it."""

    name: str
    unit: str  # what items/s counts: images or tokens
    convolutional: bool  # whether the channels_last mode applies
    presets: dict[str, dict[str, int]]
    build: Callable[[dict[str, int]], pl.LightningModule]
    batches: Callable[[dict[str, int], torch.Generator], list[Any]]  # a few distinct CPU batches
    items: Callable[[dict[str, int]], int]  # items in one batch
    # the same training step, written plainly: (module, batches on the host, device, precision, windows)
    plain_loop: Callable[[pl.LightningModule, Iterable, torch.device, Precision, Windows], list[torch.Tensor]]


# ---------------------------------------------------------------------------------------------- classifier


def _classifier(sizes: dict[str, int]) -> pl.LightningModule:
    from systems.classifier import Classifier

    side = sizes["image"]
    # the per-step sync of the non-finite guard and dropout's randomness are switched off, so that the
    # plain loop can do exactly the same arithmetic; the schedule steps per optimizer step
    return Classifier(
        image_shape=(1, side, side),
        width=sizes["width"],
        dropout=0.0,
        scheduler_interval="step",
        skip_nonfinite=False,
    )


def _classifier_batches(sizes: dict[str, int], generator: torch.Generator) -> list[Any]:
    shape = (sizes["batch"], 1, sizes["image"], sizes["image"])
    return [
        [torch.rand(shape, generator=generator), torch.randint(0, 10, (sizes["batch"],), generator=generator)]
        for _ in range(4)
    ]


def _classifier_plain(
    module: pl.LightningModule,
    batches: Iterable,
    device: torch.device,
    precision: Precision,
    windows: Windows,
) -> list[torch.Tensor]:
    """``Classifier.training_step`` and its AdamW + per-step cosine schedule, without the Trainer."""
    net = module.net.to(device)
    if precision.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=module.hparams.lr, weight_decay=module.hparams.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=windows.total_steps)
    scaling = GradScaling(precision, device)
    losses = []
    net.train()
    for x, y in batches:
        x, y = to_device((x, y), device, precision.channels_last)
        with precision.autocast(device):
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaling.backward(loss)
        scaling.step(optimizer)
        schedule.step()
        losses.append(loss.detach())
        windows.tick()
    return losses


CLASSIFIER = Workload(
    name="classifier",
    unit="images",
    convolutional=True,
    presets={"gpu": {"batch": 256, "image": 28, "width": 32}, "tiny": {"batch": 16, "image": 8, "width": 8}},
    build=_classifier,
    batches=_classifier_batches,
    items=lambda sizes: sizes["batch"],
    plain_loop=_classifier_plain,
)

WORKLOADS: dict[str, Workload] = {w.name: w for w in (CLASSIFIER,)}
