"""Plain torch: a streaming encoder and decoder, the state one chunk of a stream hands to the next, and the
chunk steps that the LightningModule (``module.py``) and the plain loop (``plain.py``) share."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]


class StreamState(NamedTuple):
    """What a stream keeps between chunks (1.x's ``hiddens``): both LSTM states, the decoder's last token."""

    encoder: LSTMState
    decoder: LSTMState
    last_token: Tensor

    def tensors(self) -> list[Tensor]:
        """The state as a list of its five tensors (as a checkpoint keeps it); ``StreamState.of`` reads it back."""
        return [*self.encoder, *self.decoder, self.last_token]

    @classmethod
    def of(cls, tensors: list[Tensor]) -> StreamState:
        return cls(tuple(tensors[:2]), tuple(tensors[2:4]), tensors[4])


def detach_state(state: StreamState) -> StreamState:
    """Cut the autograd history at a chunk border (``repackage_hidden`` in pytorch/examples): the values flow
    on, the gradients stop, so each backward covers one chunk and the previous chunk's graph is freed."""
    encoder, decoder = (tuple(t.detach() for t in lstm) for lstm in (state.encoder, state.decoder))
    return StreamState(encoder, decoder, state.last_token.detach())


class Encoder(nn.Module):
    """Reads the input stream one token per step; its LSTM state is what it keeps of the past. Token
    ``vocab_size`` is padding (an all-zero embedding that is never trained)."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, embedding_dim, padding_idx=vocab_size)
        self.rnn = nn.LSTM(embedding_dim, hidden_size, num_layers, batch_first=True)

    def forward(self, tokens: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """Encode ``tokens`` (B, T) from ``state`` (zeros when None): outputs (B, T, hidden), new state."""
        return self.rnn(self.embedding(tokens), state)


class Decoder(nn.Module):
    """Emits one target token per step from the encoder's output at that step and the token before it (the
    true one or its own); token ``vocab_size`` is the start token, fed before the first step of a stream."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.start_token = vocab_size
        self.embedding = nn.Embedding(vocab_size + 1, embedding_dim)
        self.rnn = nn.LSTM(hidden_size + embedding_dim, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, encoded: Tensor, previous: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """Logits (B, T, vocab) from the encoder's outputs (B, T, hidden) and the previous tokens (B, T)."""
        outputs, state = self.rnn(torch.cat([encoded, self.embedding(previous)], dim=-1), state)
        return self.head(outputs), state


def time_chunks(length: int, chunk_size: int) -> list[slice]:
    """The 1.x split along time: pieces of ``chunk_size`` steps, the last one shorter when need be."""
    return [slice(start, min(start + chunk_size, length)) for start in range(0, length, chunk_size)]


def teacher_forced(
    encoder: Encoder, decoder: Decoder, inputs: Tensor, targets: Tensor, state: StreamState | None = None
) -> tuple[Tensor, StreamState]:
    """One chunk (B, T) through both nets, the decoder fed the true previous tokens (training): logits
    (B, T, vocab) and the state to hand to the next chunk. ``state`` None (1.x's first ``hiddens``) starts a
    fresh stream: zero LSTM states and the start token."""
    enc_state, dec_state, last = state or (None, None, torch.full_like(inputs[:, 0], decoder.start_token))
    encoded, enc_state = encoder(inputs, enc_state)
    previous = torch.cat([last.unsqueeze(1), targets[:, :-1]], dim=1)
    logits, dec_state = decoder(encoded, previous, dec_state)
    return logits, StreamState(enc_state, dec_state, targets[:, -1])


def greedy(
    encoder: Encoder, decoder: Decoder, inputs: Tensor, state: StreamState | None = None
) -> tuple[Tensor, Tensor, StreamState]:
    """``teacher_forced``, the decoder fed its own previous tokens one step at a time (a live stream): tokens
    (B, T), their logits and the state to hand to the next chunk."""
    enc_state, dec_state, last = state or (None, None, torch.full_like(inputs[:, 0], decoder.start_token))
    encoded, enc_state = encoder(inputs, enc_state)
    token, logits = last.unsqueeze(1), []
    for step in range(inputs.shape[1]):
        step_logits, dec_state = decoder(encoded[:, step : step + 1], token, dec_state)
        token = step_logits.argmax(dim=-1)
        logits.append(step_logits)
    logits = torch.cat(logits, dim=1)
    return logits.argmax(dim=-1), logits, StreamState(enc_state, dec_state, token[:, 0])


class StreamStep(nn.Module):
    """``greedy`` one step at a time on tensors alone, batch first, as ``python -m shared.export`` writes it: each
    stream's next input token (B,) and state -> its output token (B,), logits (B, vocab) and next state. The state is
    five tensors, the LSTM states (B, num_layers, hidden) of the encoder (h, c) and the decoder (h, c) and the last
    token (B,); a stream starts from zeros and the start token (``vocab_size``), as ``state=None`` does."""

    def __init__(self, encoder: Encoder, decoder: Decoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(
        self,
        token: Tensor,
        encoder_h: Tensor,
        encoder_c: Tensor,
        decoder_h: Tensor,
        decoder_c: Tensor,
        last_token: Tensor,
    ) -> tuple[Tensor, ...]:
        h_e, c_e, h_d, c_d = (
            t.transpose(0, 1).contiguous() for t in (encoder_h, encoder_c, decoder_h, decoder_c)
        )
        state = StreamState((h_e, c_e), (h_d, c_d), last_token)
        tokens, logits, state = greedy(self.encoder, self.decoder, token.unsqueeze(1), state)
        return tokens[:, 0], logits[:, 0], *self.flat(state)

    @torch.no_grad()
    def example(self, inputs: Tensor, k: int) -> tuple[Tensor, ...]:
        """An input of the step: the streams' step ``k`` of ``inputs`` (B, T), with the state the steps before left."""
        return inputs[:, k], *self.flat(greedy(self.encoder, self.decoder, inputs[:, :k])[2])

    @staticmethod
    def flat(state: StreamState) -> tuple[Tensor, ...]:
        """``state`` as the step's five tensors, batch first."""
        return *(t.transpose(0, 1) for t in (*state.encoder, *state.decoder)), state.last_token


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """The mean cross-entropy over the real steps (``mask`` True; padded steps add nothing, not even gradients;
    0 with none) of logits (B, T, vocab) for targets (B, T)."""
    losses = F.cross_entropy(logits.transpose(1, 2), targets.masked_fill(~mask, 0), reduction="none")
    return losses.masked_fill(~mask, 0.0).sum() / mask.sum().clamp(min=1)


def chunk_loss(
    encoder: Encoder,
    decoder: Decoder,
    inputs: Tensor,
    targets: Tensor,
    mask: Tensor,
    state: StreamState | None,
    loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor] = masked_cross_entropy,
) -> tuple[Tensor, Tensor, StreamState]:
    """One chunk's training forward: its loss (``loss_fn``, the masked cross-entropy or a compiled one), its
    logits, and the state to hand to the next chunk."""
    logits, state = teacher_forced(encoder, decoder, inputs, targets, state)
    return loss_fn(logits, targets, mask), logits, state
