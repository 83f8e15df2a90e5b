"""Carry versus reset: the default run learns its task only because the states cross the chunk borders."""

from __future__ import annotations

import pytest

from systems.seq2seq.train import main
from tests.helpers import QUIET

CHANCE = 1 / 10  # running sums modulo 10 are uniform over the 10 tokens


@pytest.mark.slow
def test_carried_states_learn_the_default_task_and_reset_states_stay_at_chance() -> None:
    """The default config (running sum mod 10 lagging 4 steps, sequences of 100-300 steps, chunks of 32):
    past the first chunk every target depends on what earlier chunks saw, so only the carried state can
    know it; the greedy stream's accuracy there is the measure."""
    flags = ["fit", *QUIET, "--test_after_fit=false"]
    carried = main(flags)
    assert float(carried.trainer.callback_metrics["val/acc_past_first_chunk"]) > 0.9

    # the same trained model, streamed with its state dropped at every chunk border: back to chance
    carried.model.hparams.carry_states = False
    dropped = carried.trainer.validate(carried.model, datamodule=carried.datamodule, verbose=False)[0]
    assert dropped["val/acc_past_first_chunk"] < CHANCE + 0.1

    # the same model trained with the states reset at each chunk never gets past chance there
    reset = main([*flags, "--model.carry_states=false"])
    assert float(reset.trainer.callback_metrics["val/acc_past_first_chunk"]) < CHANCE + 0.1
