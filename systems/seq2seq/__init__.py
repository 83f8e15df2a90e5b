"""Streaming encoder-decoder trained with truncated backprop through time (1.x's truncated_bptt_steps)."""

from systems.seq2seq.module import Seq2Seq

__all__ = ["Seq2Seq"]
