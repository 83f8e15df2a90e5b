"""The parity script: Lightning and the plain loop do the same chunked steps on the same batches."""

from __future__ import annotations

from systems.seq2seq.parity import measure


def test_lightning_and_the_plain_loop_end_with_the_same_weights() -> None:
    result = measure(batches=3, warmup=1, repeats=1, seed=0, hidden_size=16, truncated_bptt_steps=16)
    assert result["max_weight_difference"] <= 1e-6
    assert result["batches_timed"] == 2
    assert result["tokens_per_second"]["plain"] > 0 and result["tokens_per_second"]["lightning"] > 0
    assert result["lightning_over_plain_median"] > 0
