"""Plain torch: a streaming encoder and decoder, the state one chunk of a stream hands to the next, and the
pieces of a chunk step that the LightningModule (``module.py``) and the plain loop (``plain.py``) share."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


class StreamState(NamedTuple):
    """Everything a stream remembers between chunks: both LSTM states and the decoder's last token.

    This is what 1.x called ``hiddens``: ``training_step`` returned it and received it back with the
    next chunk of the same batch.
    """

    encoder: LSTMState
    decoder: LSTMState
    last_token: torch.Tensor


def detach_state(state: StreamState) -> StreamState:
    """Cut the autograd history at a chunk border (``repackage_hidden`` in pytorch/examples).

    The values flow on into the next chunk; gradients stop here, so each backward covers one chunk and
    the graph of the previous chunk can be freed.
    """
    encoder, decoder, last_token = state
    return StreamState(
        (encoder[0].detach(), encoder[1].detach()),
        (decoder[0].detach(), decoder[1].detach()),
        last_token.detach(),
    )


class Encoder(nn.Module):
    """Reads the input stream one token per step; its LSTM state is what it keeps of the past.

    Token ``vocab_size`` is padding (an all-zero embedding that is never trained).
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, embedding_dim, padding_idx=vocab_size)
        self.rnn = nn.LSTM(embedding_dim, hidden_size, num_layers, batch_first=True)

    def forward(self, tokens: torch.Tensor, state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        """Encode ``tokens`` (B, T) from ``state`` (zeros when None): outputs (B, T, hidden), new state."""
        return self.rnn(self.embedding(tokens), state)


class Decoder(nn.Module):
    """Emits one target token per step from the encoder's output at that step and the token before it.

    Token ``vocab_size`` is the start token, fed back before the first step of a stream. The previous
    token is the true one when teacher-forced (training: every step runs at once) and the decoder's own
    output when greedy (prediction: the steps run one by one).
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.start_token = vocab_size
        self.embedding = nn.Embedding(vocab_size + 1, embedding_dim)
        self.rnn = nn.LSTM(hidden_size + embedding_dim, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(
        self, encoded: torch.Tensor, previous_tokens: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """Teacher-forced: logits (B, T, vocab) for the encoder outputs (B, T, hidden) and the tokens before
        each step (B, T)."""
        features = torch.cat([encoded, self.embedding(previous_tokens)], dim=-1)
        outputs, state = self.rnn(features, state)
        return self.head(outputs), state

    def greedy(
        self, encoded: torch.Tensor, last_token: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        """Greedy: each step feeds back the token it just emitted, starting from ``last_token`` (B,).

        Returns the tokens (B, T), their logits (B, T, vocab) and the final state.
        """
        tokens, logits = [], []
        token = last_token
        for step in range(encoded.shape[1]):
            step_logits, state = self(encoded[:, step : step + 1], token.unsqueeze(1), state)
            token = step_logits.argmax(dim=-1).squeeze(1)
            tokens.append(token)
            logits.append(step_logits)
        return torch.stack(tokens, dim=1), torch.cat(logits, dim=1), state


def time_chunks(length: int, chunk_size: int) -> list[slice]:
    """The 1.x split along time: pieces of ``chunk_size`` steps, the last one shorter when need be."""
    return [slice(start, min(start + chunk_size, length)) for start in range(0, length, chunk_size)]


def _opened(
    state: StreamState | None, decoder: Decoder, inputs: torch.Tensor
) -> tuple[LSTMState | None, LSTMState | None, torch.Tensor]:
    """``None`` (1.x's first ``hiddens``) means a fresh stream: zero LSTM states, the start token."""
    if state is not None:
        return state
    start = torch.full((inputs.shape[0],), decoder.start_token, dtype=torch.long, device=inputs.device)
    return None, None, start


def teacher_forced(
    encoder: Encoder,
    decoder: Decoder,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state: StreamState | None = None,
) -> tuple[torch.Tensor, StreamState]:
    """One chunk (B, T) through both nets, the decoder fed the true previous tokens (training): logits
    (B, T, vocab) and the state to hand to the next chunk."""
    encoder_state, decoder_state, last_token = _opened(state, decoder, inputs)
    encoded, encoder_state = encoder(inputs, encoder_state)
    previous_tokens = torch.cat([last_token.unsqueeze(1), targets[:, :-1]], dim=1)
    logits, decoder_state = decoder(encoded, previous_tokens, decoder_state)
    return logits, StreamState(encoder_state, decoder_state, targets[:, -1])


def greedy(
    encoder: Encoder, decoder: Decoder, inputs: torch.Tensor, state: StreamState | None = None
) -> tuple[torch.Tensor, torch.Tensor, StreamState]:
    """One chunk (B, T) through both nets, the decoder fed its own previous tokens (a live stream): tokens
    (B, T), their logits and the state to hand to the next chunk."""
    encoder_state, decoder_state, last_token = _opened(state, decoder, inputs)
    encoded, encoder_state = encoder(inputs, encoder_state)
    tokens, logits, decoder_state = decoder.greedy(encoded, last_token, decoder_state)
    return tokens, logits, StreamState(encoder_state, decoder_state, tokens[:, -1])


def chunk_loss(
    encoder: Encoder,
    decoder: Decoder,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    state: StreamState | None,
) -> tuple[torch.Tensor, torch.Tensor, StreamState]:
    """One chunk's training forward: its loss over the real steps, its logits, and the state to hand to the
    next chunk."""
    logits, state = teacher_forced(encoder, decoder, inputs, targets, state)
    return masked_cross_entropy(logits, targets, mask), logits, state


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the real steps (``mask`` True); padded steps add nothing, not even gradients.

    A piece with no real step (every sequence already ended) has loss 0.
    """
    safe_targets = targets.masked_fill(~mask, 0)
    losses = F.cross_entropy(logits.transpose(1, 2), safe_targets, reduction="none")
    return losses.masked_fill(~mask, 0.0).sum() / mask.sum().clamp(min=1)
