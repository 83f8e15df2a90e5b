"""Lightning against a plain PyTorch loop doing the same chunked TBPTT step, on the same batches.

``python -m systems.seq2seq.parity`` prints JSON: seconds per batch and real (unpadded) tokens per second
for each, their ratio, and the largest weight difference after the same steps (0 when both loops really
did the same work). Both runs start from the same seeded weights and read the same ``DataLoader``;
the plain loop does everything ``Seq2Seq.training_step`` does (chunk loss, backward, clipping, step,
detach, accuracy and loss bookkeeping) except Lightning's own logging and hooks, which are what the
ratio measures. Timing starts after ``warmup`` batches, at the same point in both loops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch

from datamodules.sequences import SequenceDataModule, padding_mask
from systems.seq2seq.module import Seq2Seq, time_chunks


def build(data: SequenceDataModule, seed: int, **model_args: Any) -> Seq2Seq:
    """A fresh model with the weights that ``seed`` gives."""
    pl.seed_everything(seed, verbose=False)
    return Seq2Seq(vocab_size=data.vocab_size, **model_args)


def plain_loop(model: Seq2Seq, data: SequenceDataModule, batches: int, warmup: int) -> tuple[float, int]:
    """Train on the first ``batches`` batches by hand; seconds and real tokens after ``warmup`` batches."""
    hparams = model.hparams
    optimizer = torch.optim.AdamW(model.parameters(), lr=hparams.lr, weight_decay=hparams.weight_decay)
    model.train()
    loader = data.train_dataloader()
    loader.sampler.set_epoch(0)  # what the Trainer does before its first epoch
    start, tokens = 0.0, 0
    for index, (inputs, targets, lengths) in enumerate(loader):
        if index == batches:
            break
        if index == warmup:
            start = time.perf_counter()
        mask = padding_mask(lengths, inputs.shape[1])
        state, loss_sum, predictions = None, torch.zeros(()), []
        for chunk in time_chunks(inputs.shape[1], hparams.truncated_bptt_steps):
            loss, logits, state = model.chunk_loss(inputs[:, chunk], targets[:, chunk], mask[:, chunk], state)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), hparams.gradient_clip_val)
            optimizer.step()
            state = model.carry(state)
            loss_sum += loss.detach() * mask[:, chunk].sum()
            predictions.append(logits.detach().argmax(dim=-1))
        model.train_acc(torch.cat(predictions, dim=1)[mask], targets[mask])
        if index >= warmup:
            tokens += int(mask.sum())
    return time.perf_counter() - start, tokens


class _Clock(pl.Callback):
    """Time Lightning's loop from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0
        self.tokens = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int
    ) -> None:
        if idx == self.warmup:
            self.start = time.perf_counter()
        if idx >= self.warmup:
            self.tokens += int(batch[2].sum())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.end = time.perf_counter()


def lightning_loop(model: Seq2Seq, data: SequenceDataModule, batches: int, warmup: int) -> tuple[float, int]:
    """Train on the same batches with the Trainer (no logger, checkpoint or progress bar to write)."""
    clock = _Clock(warmup)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(model, datamodule=data)
    return clock.end - clock.start, clock.tokens


def measure(batches: int, warmup: int, repeats: int, seed: int, **model_args: Any) -> dict[str, Any]:
    """Alternate the two loops ``repeats`` times; medians, their ratio and the weight difference."""
    data = SequenceDataModule(seed=seed)
    data.setup("fit")
    times: dict[str, list[float]] = {"lightning": [], "plain": []}
    tokens: dict[str, int] = {}
    weights: dict[str, dict[str, torch.Tensor]] = {}
    hparams: dict[str, Any] = {}
    for _ in range(repeats):
        for name, loop in (("lightning", lightning_loop), ("plain", plain_loop)):
            model = build(data, seed, **model_args)
            seconds, tokens[name] = loop(model, data, batches, warmup)
            times[name].append(seconds)
            weights[name] = model.state_dict()
            hparams = dict(model.hparams)
    if tokens["lightning"] != tokens["plain"]:
        raise RuntimeError(f"the loops saw different data: {tokens}")
    timed = batches - warmup
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "batches_timed": timed,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "model": hparams,
        "seconds_per_batch": {name: value / timed for name, value in median.items()},
        "tokens_per_second": {name: tokens[name] / value for name, value in median.items()},
        "lightning_over_plain": [
            lit / plain for lit, plain in zip(times["lightning"], times["plain"], strict=True)
        ],
        "lightning_over_plain_median": median["lightning"] / median["plain"],
        "max_weight_difference": max(
            float((weights["lightning"][key] - weights["plain"][key]).abs().max()) for key in weights["plain"]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="training batches per run, warmup included")
    parser.add_argument("--warmup", type=int, default=3, help="batches run before the clock starts")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop, alternated")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--truncated_bptt_steps", type=int, default=32)
    parser.add_argument("--hidden_size", type=int, default=64)
    args = parser.parse_args()
    if not 0 <= args.warmup < args.batches:
        parser.error("--warmup must be at least 0 and less than --batches.")
    result = measure(
        args.batches,
        args.warmup,
        args.repeats,
        args.seed,
        truncated_bptt_steps=args.truncated_bptt_steps,
        hidden_size=args.hidden_size,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
