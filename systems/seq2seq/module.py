"""The seq2seq system: an encoder and a decoder trained with truncated backprop through time (TBPTT). 1.x's
``Trainer(truncated_bptt_steps=k)`` cut each batch along time and stepped the optimizer after each piece; 2.0
removed it; ``training_step`` does it by hand, under manual optimization (``plain.py``: without Lightning)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import AdamW, lr_scheduler
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from datamodules.sequences import SequenceBatch, pad_steps, padding_mask
from shared.errors import epochs_to_train, require
from systems.seq2seq.evaluation import Decodings, StreamMetrics
from systems.seq2seq.model import (
    Decoder,
    Encoder,
    StreamState,
    StreamStep,
    chunk_loss,
    detach_state,
    greedy,
    masked_cross_entropy,
    time_chunks,
)


class Seq2Seq(pl.LightningModule):
    """A streaming encoder-decoder, one target token per input token, trained in chunks of ``truncated_bptt_steps``
    steps; validation, test and prediction stream the sequences in the same chunks, greedy, states carried.

    Args:
        vocab_size: distinct tokens (linked); token ``vocab_size`` is the padding and the decoder's start token.
        embedding_dim: size of the token embeddings of both nets.
        hidden_size: LSTM width of both nets.
        num_layers: LSTM layers of each net.
        truncated_bptt_steps: time steps per chunk, as 1.x's Trainer argument of that name.
        carry_states: pass the states on from chunk to chunk (TBPTT); False: each chunk afresh (the ablation).
        carry_across_batches: the batches are contiguous streams (``TextDataModule``): each starts from the state the
            one before left (reset each epoch; evaluation then measures loss and bits only). False: as in 1.x.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        gradient_clip_val: clip each chunk's gradient norm to this (0: none), as ``Trainer(gradient_clip_val)`` does not.
        num_examples: validation sequences whose decodings are written out at each epoch's end.
        compile: ``torch.compile`` the loss over a chunk, for any chunk length (``dynamic``). Only that: Dynamo does
            not trace ``nn.LSTM``, which stays PyTorch's fused LSTM kernel (README: what was tried).
    """

    def __init__(
        self,
        vocab_size: int = 10,
        embedding_dim: int = 32,
        hidden_size: int = 64,
        num_layers: int = 1,
        truncated_bptt_steps: int = 32,
        carry_states: bool = True,
        carry_across_batches: bool = False,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        gradient_clip_val: float = 1.0,
        num_examples: int = 4,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        sizes = embedding_dim, hidden_size, num_layers, truncated_bptt_steps
        names = "model.embedding_dim, hidden_size, num_layers and truncated_bptt_steps (steps per chunk)"
        require(min(sizes) >= 1, f"{names} must be 1 or more, got {', '.join(map(str, sizes))}.")
        require(lr > 0, f"model.lr must be > 0, got {lr}.")
        rest = weight_decay, gradient_clip_val, num_examples
        require(min(rest) >= 0, f"model.weight_decay, gradient_clip_val, num_examples must be >= 0: {rest}.")
        self.automatic_optimization = False  # the chunk loop steps the optimizer, not Lightning per batch
        self.encoder = Encoder(vocab_size, embedding_dim, hidden_size, num_layers)
        self.decoder = Decoder(vocab_size, embedding_dim, hidden_size, num_layers)
        self.loss_fn = torch.compile(masked_cross_entropy, dynamic=True) if compile else masked_cross_entropy
        # the loss weighted by real tokens (a mean per token); the accuracy without the argument checks that would
        # sync the GPU with the host at every batch
        accuracy = MulticlassAccuracy(vocab_size, average="micro", validate_args=False)
        self.train_metrics = nn.ModuleDict({"loss": MeanMetric(), "acc": accuracy})
        self.eval_metrics = nn.ModuleDict({stage: StreamMetrics(vocab_size) for stage in ("val", "test")})
        self.carried: StreamState | None = None  # where the training streams stand, across batches
        self.eval_carried: StreamState | None = None  # the same for validation and test

    def training_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        inputs, targets, lengths = batch
        if self.trainer.world_size > 1:  # under DDP every process must run as many chunks (each all-reduces)
            longest = int(self.all_gather(torch.tensor(inputs.shape[1], device=self.device)).max())
            inputs, targets = (pad_steps(t, longest, self.hparams.vocab_size) for t in (inputs, targets))
        mask, optimizer = padding_mask(lengths, inputs.shape[1]), self.optimizers()
        # as in 1.x, every batch starts a fresh stream; contiguous streams go on from the batch before
        state = self.carried if self.hparams.carry_across_batches and batch_idx > 0 else None
        loss_sum, predictions = torch.zeros((), device=self.device), []
        for chunk in time_chunks(inputs.shape[1], self.hparams.truncated_bptt_steps):
            loss, logits, state = self.chunk_loss(inputs[:, chunk], targets[:, chunk], mask[:, chunk], state)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()  # one optimizer step per chunk (clipped in on_before_optimizer_step)
            state = self.carry(state)
            loss_sum += loss.detach() * mask[:, chunk].sum()
            predictions.append(logits.detach().argmax(dim=-1))
        self.carried = state if self.hparams.carry_across_batches else None
        # once per batch: a chunk may hold padding only (a short batch padded for DDP)
        self.train_metrics["loss"](loss_sum / mask.sum(), weight=mask.sum())
        self.train_metrics["acc"](torch.cat(predictions, dim=1)[mask], targets[mask])
        self.log("train/loss", self.train_metrics["loss"], on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_metrics["acc"], on_step=False, on_epoch=True)

    def chunk_loss(self, inputs: Tensor, targets: Tensor, mask: Tensor, state: StreamState | None) -> tuple:
        """``model.chunk_loss`` on this system's nets: the chunk's loss, its logits, the state to hand on."""
        return chunk_loss(self.encoder, self.decoder, inputs, targets, mask, state, self.loss_fn)

    def carry(self, state: StreamState) -> StreamState | None:
        """What the next chunk starts from: the state detached (gradients stop at the border), or nothing."""
        return detach_state(state) if self.hparams.carry_states else None

    def on_fit_start(self) -> None:
        n, across = self.trainer.world_size, self.hparams.carry_across_batches
        fix = "batch j+1 continues batch j in one process only: train on one device"
        require(n == 1 or not across, f"model.carry_across_batches needs one process, not {n}: {fix}.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # a resume goes on from this state
        checkpoint["stream_state"] = self.carried and self.carried.tensors()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if saved := checkpoint.get("stream_state"):
            self.carried = StreamState.of([t.to(self.device) for t in saved])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # each chunk's clip, here rather than in training_step: under 16-mixed Lightning unscales the gradients
        # inside optimizer.step(), just before this hook (Lightning issue #18089)
        self.clip_gradients(optimizer, self.hparams.gradient_clip_val, gradient_clip_algorithm="norm")

    def on_train_epoch_end(self) -> None:  # manual optimization: the scheduler is ours; before last.ckpt
        self.lr_schedulers().step()

    def configure_optimizers(self) -> tuple[list, list]:
        optimizer = AdamW(self.parameters(), self.hparams.lr, weight_decay=self.hparams.weight_decay)
        return [optimizer], [lr_scheduler.CosineAnnealingLR(optimizer, epochs_to_train(self.trainer))]

    def forward(self, inputs: Tensor, state: StreamState | None = None) -> tuple[Tensor, Tensor, StreamState]:
        """Greedy-decode one chunk ``inputs`` (B, T) from ``state``: tokens (B, T), logits, the next state."""
        return greedy(self.encoder, self.decoder, inputs, state)

    def stream(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Greedy-decode whole sequences (B, T) chunk by chunk, the state carried from each to the next."""
        state, tokens, logits = None, [], []
        for chunk in time_chunks(inputs.shape[1], self.hparams.truncated_bptt_steps):
            chunk_tokens, chunk_logits, state = self(inputs[:, chunk], state)
            state = self.carry(state)
            tokens.append(chunk_tokens)
            logits.append(chunk_logits)
        return torch.cat(tokens, dim=1), torch.cat(logits, dim=1)

    def exportable(self, batch: SequenceBatch) -> tuple[nn.Module, tuple[Tensor, ...]]:
        """What ``python -m shared.export`` writes: ``forward`` one step at a time (``model.StreamStep``: streams of any
        length; the chunks only cut gradients), and its input, the step after the batch's first chunk."""
        step = StreamStep(self.encoder, self.decoder)
        return step, step.example(batch[0], min(self.hparams.truncated_bptt_steps, batch[0].shape[1] - 1))

    def _evaluate(self, batch: SequenceBatch, stage: str, batch_idx: int) -> Tensor | None:
        """Validation's and test's step: the loss teacher-forced in chunks as in training (also in bits per token),
        and the greedy stream's metrics, but not for contiguous streams (a text). Returns the stream's tokens."""
        (inputs, targets, lengths), k = batch, self.hparams.truncated_bptt_steps
        mask, metrics = padding_mask(lengths, inputs.shape[1]), self.eval_metrics[stage]
        across = self.hparams.carry_across_batches
        state, tokens = self.eval_carried if across and batch_idx > 0 else None, None
        for chunk in time_chunks(inputs.shape[1], k):
            loss, _, state = self.chunk_loss(inputs[:, chunk], targets[:, chunk], mask[:, chunk], state)
            metrics.update_loss(loss, mask[:, chunk])
            state = self.carry(state)
        self.eval_carried = state if across else None
        if not across:  # in a text the greedy stream would feed the decoder its guesses of the inputs
            tokens, _ = self.stream(inputs)
            metrics.update_stream(tokens, targets, mask, k)
        for name in ("loss", "bpc") if across else metrics:
            self.log(f"{stage}/{name}", metrics[name], prog_bar=stage == "val" and name in ("acc", "bpc"))
        return tokens

    def validation_step(self, batch: SequenceBatch, batch_idx: int) -> Tensor | None:
        return self._evaluate(batch, "val", batch_idx)  # the tokens: Decodings writes the first few out

    def configure_callbacks(self) -> list[pl.Callback]:
        return [Decodings(self.hparams.num_examples)] if self.hparams.num_examples else []

    def test_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test", batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> list[Tensor]:
        """Whole sequences streamed in chunks, from ``(inputs, targets, lengths)`` or bare inputs (B, T): each one's
        tokens, padding cut off."""
        if not isinstance(batch, list | tuple):
            batch = batch, None, torch.full((len(batch),), batch.shape[1])
        inputs, _, lengths = batch
        tokens, _ = self.stream(inputs)
        return [row[: int(n)].cpu() for row, n in zip(tokens, lengths, strict=True)]
