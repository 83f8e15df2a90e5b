"""The seq2seq system: an encoder and a decoder trained with truncated backprop through time (TBPTT).

Lightning 1.x did TBPTT for you: ``Trainer(truncated_bptt_steps=k)`` cut each batch along time, called
``training_step(batch, batch_idx, hiddens)`` once per piece and stepped the optimizer after each. Lightning 2.0
removed that; here ``training_step`` does the same by hand, under manual optimization. ``plain.py`` is the same
step without Lightning; ``model.py`` holds the plain-torch pieces both use.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from datamodules.sequences import SequenceBatch, padding_mask
from shared.errors import epochs_to_train, require
from shared.visuals import epoch_file, tensorboards
from systems.seq2seq.decodings import Example, first_examples, format_decodings
from systems.seq2seq.model import Decoder, Encoder, StreamState, chunk_loss, detach_state, greedy, time_chunks


class Seq2Seq(pl.LightningModule):
    """A streaming encoder-decoder that emits one target token per input token, trained in chunks of
    ``truncated_bptt_steps`` steps; validation, test and prediction stream the sequences through in the same
    chunks, decoding greedily and carrying the state as a live stream would.

    Args:
        vocab_size: distinct tokens (linked from the datamodule); token ``vocab_size`` is padding for the encoder
            and the start token for the decoder.
        embedding_dim: size of the token embeddings of both nets.
        hidden_size: LSTM width of both nets.
        num_layers: LSTM layers of each net.
        truncated_bptt_steps: time steps per chunk, as 1.x's Trainer argument of that name.
        carry_states: pass the states on from chunk to chunk (TBPTT); False starts every chunk afresh, the
            ablation that shows what carrying buys.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        gradient_clip_val: clip each chunk's gradient norm to this (0: no clipping); manual optimization does not
            clip for you, and Lightning refuses ``Trainer(gradient_clip_val=...)`` with it.
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
        sizes = f"embedding_dim={embedding_dim}, hidden_size={hidden_size}, num_layers={num_layers}"
        require(
            min(embedding_dim, hidden_size, num_layers) >= 1,
            f"The model's sizes must be positive, got {sizes}.",
        )
        require(
            truncated_bptt_steps >= 1,
            f"model.truncated_bptt_steps (time steps per chunk, e.g. 32) must be positive, got {truncated_bptt_steps}.",
        )
        require(
            lr > 0 and min(weight_decay, gradient_clip_val, num_examples) >= 0,
            f"lr must be > 0 and weight_decay, gradient_clip_val and num_examples >= 0, got lr={lr}, weight_decay="
            f"{weight_decay}, gradient_clip_val={gradient_clip_val}, num_examples={num_examples}.",
        )
        self.automatic_optimization = False  # the chunk loop steps the optimizer, not Lightning per batch
        self.encoder = Encoder(vocab_size, embedding_dim, hidden_size, num_layers)
        self.decoder = Decoder(vocab_size, embedding_dim, hidden_size, num_layers)
        # each stage's loss is a MeanMetric weighted by real tokens: an epoch's loss is a mean per token
        self.train_metrics = _metrics(vocab_size, streamed=False)
        self.eval_metrics = nn.ModuleDict(
            {stage: _metrics(vocab_size, streamed=True) for stage in ("val", "test")}
        )
        self.val_examples: list[
            Example
        ] = []  # what 1.x passed to validation_epoch_end as `outputs`; freed there

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

    def chunk_loss(
        self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, state: StreamState | None
    ) -> tuple[torch.Tensor, torch.Tensor, StreamState]:
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
        """The batch padded to the longest of all processes: under DDP each backward all-reduces the gradients, so
        every process must run as many chunks, or the others wait for it forever."""
        inputs, targets, lengths = batch
        if self.trainer.world_size == 1:
            return batch
        extra = (
            0,
            int(self.all_gather(torch.tensor(inputs.shape[1], device=self.device)).max()) - inputs.shape[1],
        )
        pad = self.hparams.vocab_size
        return F.pad(inputs, extra, value=pad), F.pad(targets, extra, value=pad), lengths

    def on_train_epoch_end(self) -> None:
        # manual optimization leaves the scheduler to us; stepped before last.ckpt is written
        self.lr_schedulers().step()

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": CosineAnnealingLR(optimizer, T_max=epochs_to_train(self.trainer)),
        }

    def forward(
        self, inputs: torch.Tensor, state: StreamState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, StreamState]:
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
        """Validation's and test's step: the greedy stream's metrics, and the loss teacher-forced in chunks as in
        training; returns the stream's tokens."""
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
        # a text file in the run's folder and TensorBoard's text (Markdown: indented, a code block); every
        # process asks for the file, which is a broadcast under DDP, and the first writes its own examples
        examples, self.val_examples = self.val_examples, []
        if self.hparams.num_examples and (path := epoch_file(self.trainer, "val/decodings", ".txt")):
            text = f"epoch {self.current_epoch}\n\n{format_decodings(examples, self.hparams.vocab_size, self.hparams.truncated_bptt_steps)}\n"
            path.write_text(text, encoding="utf-8")
            for writer in tensorboards(self.trainer):
                writer.add_text(
                    "val/decodings", "\n".join("    " + line for line in text.splitlines()), self.global_step
                )

    def test_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> list[torch.Tensor]:
        """Stream whole sequences through chunk by chunk, from a batch ``(inputs, targets, lengths)`` or a bare (B, T)
        tensor of inputs: one tensor of tokens per sequence, padding cut off."""
        inputs, _, lengths = (
            batch
            if isinstance(batch, list | tuple)
            else (batch, None, torch.full((len(batch),), batch.shape[1]))
        )
        tokens, _ = self.stream(inputs)
        return [row[: int(n)].cpu() for row, n in zip(tokens, lengths, strict=True)]


def _metrics(vocab_size: int, streamed: bool) -> nn.ModuleDict:
    """One stage's metrics, logged as ``stage/name``: the loss per token and the token accuracy; for the greedy
    stream (validation, test) also the accuracy past the first chunk and the share of sequences without an error."""
    # the training accuracy skips its argument checks, which would sync the GPU with the host at every batch
    metrics = {
        "loss": MeanMetric(),
        "acc": MulticlassAccuracy(vocab_size, average="micro", validate_args=streamed),
    }
    if streamed:
        metrics |= {
            "acc_past_first_chunk": MulticlassAccuracy(vocab_size, average="micro"),
            "exact": MeanMetric(),
        }
    return nn.ModuleDict(metrics)
