"""The seq2seq system: an encoder and a decoder trained with truncated backprop through time (TBPTT). 1.x's
``Trainer(truncated_bptt_steps=k)`` cut each batch along time, called ``training_step(batch, batch_idx, hiddens)``
per piece and stepped the optimizer after each; 2.0 removed it, and ``training_step`` does it by hand here, under
manual optimization. ``plain.py`` is the same step without Lightning, on ``model.py``'s pieces."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from datamodules.sequences import SequenceBatch, padding_mask
from shared.errors import epochs_to_train, require
from systems.seq2seq.evaluation import Example, first_examples, stage_metrics, write_decodings
from systems.seq2seq.model import Decoder, Encoder, StreamState, chunk_loss, detach_state, greedy, time_chunks


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
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        gradient_clip_val: clip each chunk's gradient norm to this (0: no clipping): manual optimization does not
            clip for you, nor take ``Trainer(gradient_clip_val=...)``.
        num_examples: validation sequences whose decodings are written out at each epoch's end.
    """

    def __init__(
        self,
        vocab_size: int = 10,
        embedding_dim: int = 32,
        hidden_size: int = 64,
        num_layers: int = 1,
        truncated_bptt_steps: int = 32,
        carry_states: bool = True,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        gradient_clip_val: float = 1.0,
        num_examples: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        sizes = (embedding_dim, hidden_size, num_layers, truncated_bptt_steps)
        names = "model.embedding_dim, hidden_size, num_layers and truncated_bptt_steps (steps per chunk)"
        require(min(sizes) >= 1, f"{names} must be 1 or more, got {', '.join(map(str, sizes))}.")
        rest = (
            f"weight_decay={weight_decay}, gradient_clip_val={gradient_clip_val}, num_examples={num_examples}"
        )
        require(lr > 0, f"model.lr must be > 0, got {lr}.")
        require(min(weight_decay, gradient_clip_val, num_examples) >= 0, f"These must be 0 or more: {rest}.")
        self.automatic_optimization = False  # the chunk loop steps the optimizer, not Lightning per batch
        self.encoder = Encoder(vocab_size, embedding_dim, hidden_size, num_layers)
        self.decoder = Decoder(vocab_size, embedding_dim, hidden_size, num_layers)
        # each stage's loss is a MeanMetric weighted by real tokens: an epoch's loss is a mean per token
        self.train_metrics = stage_metrics(vocab_size, streamed=False)
        self.eval_metrics = nn.ModuleDict(
            {s: stage_metrics(vocab_size, streamed=True) for s in ("val", "test")}
        )
        # what 1.x passed to validation_epoch_end as `outputs`; freed there
        self.val_examples: list[Example] = []

    def training_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        inputs, targets, lengths = self._same_length_in_every_process(batch)
        mask, optimizer = padding_mask(lengths, inputs.shape[1]), self.optimizers()
        state = None  # as in 1.x, every batch starts a fresh stream
        loss_sum, predictions = torch.zeros((), device=self.device), []
        for chunk in time_chunks(inputs.shape[1], self.hparams.truncated_bptt_steps):
            loss, logits, state = self.chunk_loss(inputs[:, chunk], targets[:, chunk], mask[:, chunk], state)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()  # one optimizer step per chunk (clipped in on_before_optimizer_step)
            state = self.carry(state)
            loss_sum += loss.detach() * mask[:, chunk].sum()
            predictions.append(logits.detach().argmax(dim=-1))
        # once per batch: a chunk may hold padding only (a short batch padded for DDP)
        self.train_metrics["loss"](loss_sum / mask.sum(), weight=mask.sum())
        self.train_metrics["acc"](torch.cat(predictions, dim=1)[mask], targets[mask])
        self.log("train/loss", self.train_metrics["loss"], on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_metrics["acc"], on_step=False, on_epoch=True)

    def chunk_loss(self, inputs: Tensor, targets: Tensor, mask: Tensor, state: StreamState | None) -> tuple:
        """``model.chunk_loss`` on this system's nets: the chunk's loss, its logits, the state to hand on."""
        return chunk_loss(self.encoder, self.decoder, inputs, targets, mask, state)

    def carry(self, state: StreamState) -> StreamState | None:
        """What the next chunk starts from: the state detached (gradients stop at the border), or nothing."""
        return detach_state(state) if self.hparams.carry_states else None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # each chunk's clip, here rather than in training_step: under 16-mixed Lightning unscales the gradients
        # inside optimizer.step(), just before this hook (Lightning issue #18089)
        self.clip_gradients(optimizer, self.hparams.gradient_clip_val, gradient_clip_algorithm="norm")

    def _same_length_in_every_process(self, batch: SequenceBatch) -> SequenceBatch:
        """Padded to the longest batch of all processes: under DDP each must run as many chunks (all-reduces)."""
        inputs, targets, lengths = batch
        if self.trainer.world_size == 1:
            return batch
        longest = int(self.all_gather(torch.tensor(inputs.shape[1], device=self.device)).max())
        extra, pad = (0, longest - inputs.shape[1]), self.hparams.vocab_size
        return F.pad(inputs, extra, value=pad), F.pad(targets, extra, value=pad), lengths

    def on_train_epoch_end(self) -> None:  # manual optimization: the scheduler is ours; before last.ckpt
        self.lr_schedulers().step()

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), hp.lr, weight_decay=hp.weight_decay)
        scheduler = CosineAnnealingLR(optimizer, epochs_to_train(self.trainer))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def forward(self, inputs: torch.Tensor, state: StreamState | None = None) -> tuple[torch.Tensor, ...]:
        """Greedy-decode one chunk ``inputs`` (B, T) from ``state``: tokens (B, T), logits, the next state."""
        return greedy(self.encoder, self.decoder, inputs, state)

    def stream(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy-decode whole sequences (B, T) chunk by chunk, the state carried from each to the next."""
        state, tokens, logits = None, [], []
        for chunk in time_chunks(inputs.shape[1], self.hparams.truncated_bptt_steps):
            chunk_tokens, chunk_logits, state = self(inputs[:, chunk], state)
            state = self.carry(state)
            tokens.append(chunk_tokens)
            logits.append(chunk_logits)
        return torch.cat(tokens, dim=1), torch.cat(logits, dim=1)

    def _evaluate(self, batch: SequenceBatch, stage: str) -> torch.Tensor:
        """Validation's and test's step: the greedy stream's metrics and tokens, and the loss teacher-forced in
        chunks as in training."""
        inputs, targets, lengths = batch
        mask, metrics = padding_mask(lengths, inputs.shape[1]), self.eval_metrics[stage]
        tokens, _ = self.stream(inputs)
        metrics["acc"](tokens[mask], targets[mask])
        late = mask.clone()
        late[:, : self.hparams.truncated_bptt_steps] = False
        if late.any():
            metrics["acc_past_first_chunk"](tokens[late], targets[late])
        metrics["exact"](((tokens == targets) | ~mask).all(dim=1).float())
        state = None
        for chunk in time_chunks(inputs.shape[1], self.hparams.truncated_bptt_steps):
            loss, _, state = self.chunk_loss(inputs[:, chunk], targets[:, chunk], mask[:, chunk], state)
            metrics["loss"].update(loss, weight=mask[:, chunk].sum())
            state = self.carry(state)
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, prog_bar=stage == "val" and name == "acc")
        return tokens

    def validation_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        tokens = self._evaluate(batch, "val")
        if batch_idx == 0:
            self.val_examples += first_examples(batch, tokens, self.hparams.num_examples)

    def on_validation_epoch_end(self) -> None:
        examples, self.val_examples = self.val_examples, []
        if self.hparams.num_examples:
            hp = self.hparams
            write_decodings(self.trainer, examples, hp.vocab_size, hp.truncated_bptt_steps)

    def test_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> list[torch.Tensor]:
        """Whole sequences streamed in chunks, from ``(inputs, targets, lengths)`` or bare inputs (B, T): each one's
        tokens, padding cut off."""
        if not isinstance(batch, list | tuple):
            batch = batch, None, torch.full((len(batch),), batch.shape[1])
        inputs, _, lengths = batch
        tokens, _ = self.stream(inputs)
        return [row[: int(n)].cpu() for row, n in zip(tokens, lengths, strict=True)]
