"""Plain torch: a streaming encoder and decoder, and the state one chunk of a stream hands to the next."""

from __future__ import annotations

from typing import NamedTuple

import torch
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
