"""What the benchmarks time: each system's real LightningModule, synthetic batches of a chosen size, and
the same training step written as a plain PyTorch loop (for the parity benchmark).

A workload's sizes come in presets (``gpu``: sized to fill an H100, as the reference figures in
benchmarks/README.md are; ``cpu``: the sizes each system trains with by default on a CPU; ``tiny``: a
smoke run for the tests) and can be overridden from the command line (``--size classifier.batch=512``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
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
    build: Callable[[dict[str, int], bool], pl.LightningModule]  # (sizes, compile)
    batches: Callable[[dict[str, int], torch.Generator], list[Any]]  # a few distinct CPU batches
    items: Callable[[dict[str, int]], int]  # items in one batch
    # the same training step, written plainly: (module, batches on the host, device, precision, windows)
    plain_loop: Callable[[pl.LightningModule, Iterable, torch.device, Precision, Windows], list[torch.Tensor]]


# ---------------------------------------------------------------------------------------------- classifier


def _classifier(sizes: dict[str, int], compile: bool) -> pl.LightningModule:
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
        compile=compile,
    )


def _labelled_images(channels: int, count: int) -> Callable[[dict[str, int], torch.Generator], list[Any]]:
    """``count`` batches of random images in [0, 1] with labels 0-9, sized by the preset."""

    def batches(sizes: dict[str, int], generator: torch.Generator) -> list[Any]:
        shape = (sizes["batch"], channels, sizes["image"], sizes["image"])
        labels = (sizes["batch"],)
        return [
            [torch.rand(shape, generator=generator), torch.randint(0, 10, labels, generator=generator)]
            for _ in range(count)
        ]

    return batches


def _classifier_plain(
    module: pl.LightningModule,
    batches: Iterable,
    device: torch.device,
    precision: Precision,
    windows: Windows,
) -> list[torch.Tensor]:
    """``systems/classifier/plain.py``'s loop on the LightningModule's own network and settings."""
    from systems.classifier.plain import train

    net = module.to(device).net
    if precision.channels_last:
        net = net.to(memory_format=torch.channels_last)
    hparams = module.hparams
    return train(
        net,
        batches,
        device=device,
        num_classes=hparams.num_classes,
        lr=hparams.lr,
        weight_decay=hparams.weight_decay,
        total_steps=windows.total_steps,
        autocast_dtype=precision.autocast_dtype,
        on_step=windows.tick,
    )


CLASSIFIER = Workload(
    name="classifier",
    unit="images",
    convolutional=True,
    presets={
        "gpu": {"batch": 256, "image": 28, "width": 32},
        "cpu": {"batch": 64, "image": 8, "width": 32},
        "tiny": {"batch": 16, "image": 8, "width": 8},
    },
    build=_classifier,
    batches=_labelled_images(channels=1, count=4),
    items=lambda sizes: sizes["batch"],
    plain_loop=_classifier_plain,
)

# ------------------------------------------------------------------------------------------------- seq2seq


def _seq2seq(sizes: dict[str, int], compile: bool) -> pl.LightningModule:
    from systems.seq2seq import Seq2Seq

    return Seq2Seq(
        vocab_size=10,
        embedding_dim=sizes["hidden"] // 2,
        hidden_size=sizes["hidden"],
        num_layers=sizes["layers"],
        truncated_bptt_steps=sizes["chunk"],
        num_examples=0,
        compile=compile,
    )


def _seq2seq_batches(sizes: dict[str, int], generator: torch.Generator) -> list[Any]:
    shape = (sizes["batch"], sizes["length"])
    lengths = torch.full((sizes["batch"],), sizes["length"])
    return [
        [
            torch.randint(0, 10, shape, generator=generator),
            torch.randint(0, 10, shape, generator=generator),
            lengths,
        ]
        for _ in range(4)
    ]


def _seq2seq_plain(
    module: pl.LightningModule,
    batches: Iterable,
    device: torch.device,
    precision: Precision,
    windows: Windows,
) -> list[torch.Tensor]:
    """``systems/seq2seq/plain.py``'s ``train`` (``Seq2Seq.training_step`` without the Trainer) on the
    module's own nets and hyper-parameters."""
    from systems.seq2seq import plain

    module = module.to(device)
    hparams = module.hparams
    return plain.train(
        module.encoder,
        module.decoder,
        batches,
        device,
        lr=hparams.lr,
        weight_decay=hparams.weight_decay,
        truncated_bptt_steps=hparams.truncated_bptt_steps,
        gradient_clip_val=hparams.gradient_clip_val,
        carry_states=hparams.carry_states,
        autocast_dtype=precision.autocast_dtype,
        loss_fn=module.loss_fn,
        on_step=windows.tick,
    )


SEQ2SEQ = Workload(
    name="seq2seq",
    unit="tokens",
    convolutional=False,
    presets={
        "gpu": {"batch": 64, "length": 512, "chunk": 64, "hidden": 512, "layers": 2},
        "cpu": {"batch": 32, "length": 200, "chunk": 32, "hidden": 64, "layers": 1},
        "tiny": {"batch": 4, "length": 24, "chunk": 8, "hidden": 16, "layers": 1},
    },
    build=_seq2seq,
    batches=_seq2seq_batches,
    items=lambda sizes: sizes["batch"] * sizes["length"],
    plain_loop=_seq2seq_plain,
)


# ------------------------------------------------------------------------------------------------ transfer


def _transfer(frozen: bool) -> Callable[[dict[str, int], bool], pl.LightningModule]:
    def build(sizes: dict[str, int], compile: bool) -> pl.LightningModule:
        from systems.transfer import TransferLearner

        arch = {18: "resnet18", 34: "resnet34", 50: "resnet50"}[sizes["depth"]]
        side = sizes["image"]
        return TransferLearner(
            num_classes=10,
            image_shape=(3, side, side),
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            arch=arch,
            weights=None,  # random weights time the same as pretrained ones, and need no file
            unfreeze_at_epoch=None if frozen else 0,
            unfreeze_stages=5,
            bn_policy="frozen" if frozen else "train",
            compile=compile,
        )

    return build


def _transfer_plain(
    module: pl.LightningModule,
    batches: Iterable,
    device: torch.device,
    precision: Precision,
    windows: Windows,
) -> list[torch.Tensor]:
    """``TransferLearner.training_step`` without the Trainer: systems/transfer/plain.py's ``train`` on the
    module's own nets and hyper-parameters."""
    from systems.transfer.plain import train

    hparams = module.hparams
    return train(
        module.normalize,
        module.backbone,
        module.head,
        batches,
        device,
        lr=hparams.lr,
        backbone_lr=hparams.backbone_lr,
        weight_decay=hparams.weight_decay,
        bn_policy=hparams.bn_policy,
        channels_last=hparams.channels_last or precision.channels_last,
        autocast_dtype=precision.autocast_dtype,
        on_step=windows.tick,
    )


def _transfer_workload(frozen: bool) -> Workload:
    return Workload(
        name="transfer-frozen" if frozen else "transfer-full",
        unit="images",
        convolutional=True,
        presets={
            "gpu": {"batch": 128, "image": 224, "depth": 50},
            "cpu": {"batch": 32, "image": 32, "depth": 18},
            "tiny": {"batch": 4, "image": 32, "depth": 18},
        },
        build=_transfer(frozen),
        batches=_labelled_images(channels=3, count=2),
        items=lambda sizes: sizes["batch"],
        plain_loop=_transfer_plain,
    )


# ----------------------------------------------------------------------------------------------------- gan


def _gan(sizes: dict[str, int], compile: bool) -> pl.LightningModule:
    from systems.gan import GAN

    side = sizes["image"]
    return GAN(
        image_shape=(1, side, side),
        latent_dim=sizes["latent"],
        width=sizes["width"],
        n_critic=sizes["critic"],
        n_generator=1,
        # the networks and settings the GPU figures in benchmarks/README.md were measured with
        generator_blocks=0,
        ema_decay=0.0,
        lr_generator=5e-4,
        betas=(0.5, 0.9),
        judge=False,  # validation is off in these runs; the judge would only be trained for nothing
        compile=compile,
    )


def _gan_batches(sizes: dict[str, int], generator: torch.Generator) -> list[Any]:
    shape = (sizes["batch"], 1, sizes["image"], sizes["image"])
    labels = torch.zeros(sizes["batch"], dtype=torch.long)
    return [[torch.rand(shape, generator=generator) * 2 - 1, labels] for _ in range(4)]


def _gan_plain(
    module: pl.LightningModule,
    batches: Iterable,
    device: torch.device,
    precision: Precision,
    windows: Windows,
) -> list[torch.Tensor]:
    """``systems/gan/plain.py``'s loop on the LightningModule's own networks and settings."""
    from systems.gan.plain import train

    module = module.to(device)
    if precision.channels_last:
        module = module.to(memory_format=torch.channels_last)
    hparams = module.hparams
    return train(
        module.generator,
        module.discriminator,
        enumerate(batches),  # one epoch: batch_idx counts from 0, as in the Trainer
        device=device,
        latent_dim=hparams.latent_dim,
        n_critic=hparams.n_critic,
        n_generator=hparams.n_generator,
        gp_weight=hparams.gp_weight,
        lr_generator=hparams.lr_generator,
        lr_discriminator=hparams.lr_discriminator,
        betas=tuple(hparams.betas),
        average=module.generator_ema,
        autocast_dtype=precision.autocast_dtype,
        on_step=windows.tick,
    )


GAN_WORKLOAD = Workload(
    name="gan",
    unit="images",
    convolutional=True,
    presets={
        "gpu": {"batch": 128, "image": 64, "width": 64, "latent": 100, "critic": 1},
        "cpu": {"batch": 64, "image": 8, "width": 32, "latent": 64, "critic": 5},
        "tiny": {"batch": 8, "image": 8, "width": 8, "latent": 8, "critic": 2},
    },
    build=_gan,
    batches=_gan_batches,
    items=lambda sizes: sizes["batch"],
    plain_loop=_gan_plain,
)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        CLASSIFIER,
        GAN_WORKLOAD,
        SEQ2SEQ,
        _transfer_workload(frozen=True),
        _transfer_workload(frozen=False),
    )
}
