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
    """``Classifier.training_step`` and its AdamW + per-step cosine schedule, without the Trainer."""
    module = module.to(device)
    net = module.net
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
            logits = net(x)
            loss = F.cross_entropy(logits, y)
        module.train_acc(logits, y)  # the step's own bookkeeping counts as the step's work, as in Lightning
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


def _seq2seq(sizes: dict[str, int]) -> pl.LightningModule:
    from systems.seq2seq import Seq2Seq

    return Seq2Seq(
        vocab_size=10,
        embedding_dim=sizes["hidden"] // 2,
        hidden_size=sizes["hidden"],
        num_layers=sizes["layers"],
        truncated_bptt_steps=sizes["chunk"],
        num_examples=0,
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


def _transfer(frozen: bool) -> Callable[[dict[str, int]], pl.LightningModule]:
    def build(sizes: dict[str, int]) -> pl.LightningModule:
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
        )

    return build


def _transfer_plain(
    module: pl.LightningModule,
    batches: Iterable,
    device: torch.device,
    precision: Precision,
    windows: Windows,
) -> list[torch.Tensor]:
    """``TransferLearner.training_step`` without the Trainer (its forward skips a frozen backbone's graph)."""
    module = module.to(device).train()
    if precision.channels_last:
        module = module.to(memory_format=torch.channels_last)
    module.set_backbone_mode()
    optimizer = module.configure_optimizers()
    scaling = GradScaling(precision, device)
    losses = []
    for batch in batches:
        x, y = to_device(batch, device, precision.channels_last)
        with precision.autocast(device):
            logits = module(x)
            loss = F.cross_entropy(logits, y)
        module.train_acc(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaling.backward(loss)
        scaling.step(optimizer)
        losses.append(loss.detach())
        windows.tick()
    return losses


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


def _gan(sizes: dict[str, int]) -> pl.LightningModule:
    from systems.gan import GAN

    side = sizes["image"]
    return GAN(
        image_shape=(1, side, side),
        latent_dim=sizes["latent"],
        width=sizes["width"],
        n_critic=sizes["critic"],
        n_generator=1,
        judge=False,  # validation is off in these runs; the judge would only be trained for nothing
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
    """``GAN.training_step`` without the Trainer: the 1.x cycle of critic and generator batches, the other
    network switched off around each step (what ``toggle_optimizer`` does), the same random draws."""
    module = module.to(device).train()
    if precision.channels_last:
        module = module.to(memory_format=torch.channels_last)
    hparams = module.hparams
    generator, critic = module.generator, module.discriminator
    betas = tuple(hparams.betas)
    d_optimizer = torch.optim.Adam(critic.parameters(), lr=hparams.lr_discriminator, betas=betas)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=hparams.lr_generator, betas=betas)
    scaling = GradScaling(precision, device)
    losses = []
    for batch_idx, batch in enumerate(batches):
        real = to_device(batch[0], device, precision.channels_last)
        n = real.shape[0]
        if module.is_critic_batch(batch_idx):
            generator.requires_grad_(False)
            with precision.autocast(device):
                with torch.no_grad():
                    fake = generator(torch.randn(n, hparams.latent_dim, device=device))
                real_scores, fake_scores = critic(real), critic(fake)
                penalty = module.gradient_penalty(real, fake)
                loss = fake_scores.mean() - real_scores.mean() + hparams.gp_weight * penalty
            d_optimizer.zero_grad()
            scaling.backward(loss)
            scaling.step(d_optimizer)
            generator.requires_grad_(True)
        else:
            critic.requires_grad_(False)
            with precision.autocast(device):
                loss = -critic(generator(torch.randn(n, hparams.latent_dim, device=device))).mean()
            g_optimizer.zero_grad()
            scaling.backward(loss)
            scaling.step(g_optimizer)
            critic.requires_grad_(True)
        losses.append(loss.detach())
        windows.tick()
    return losses


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
