"""Truncated backprop through time: the 1.x semantics, reproduced by hand under manual optimization."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from datamodules.sequences import collate_sequences, make_targets, padding_mask
from systems.seq2seq import Seq2Seq
from systems.seq2seq.model import StreamState, teacher_forced

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")


def tiny_model(truncated_bptt_steps: int, **overrides: object) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(hidden_size=12, embedding_dim=6, truncated_bptt_steps=truncated_bptt_steps, **overrides)


def batches_of(length: int, batches: int = 2, batch_size: int = 3) -> DataLoader:
    """``batches`` batches whose sequences all have ``length`` steps (as the 1.x reference traces used)."""
    generator = torch.Generator().manual_seed(length)
    inputs = torch.randint(0, 10, (batches * batch_size, length), generator=generator)
    targets = make_targets(inputs, "running_sum", 10, 2)
    lengths = torch.full((batches * batch_size,), length)
    return DataLoader(TensorDataset(inputs, targets, lengths), batch_size=batch_size)


def fit(model: Seq2Seq, loader: DataLoader, **trainer_args: object) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **trainer_args,
    }
    trainer = pl.Trainer(**options)
    trainer.fit(model, train_dataloaders=loader)
    return trainer


def record_chunks(model: Seq2Seq, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Wrap ``chunk_loss`` to record, per chunk, its length and the state it got and gave."""
    calls: list[dict[str, object]] = []
    original = model.chunk_loss

    def spy(inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, state: StreamState | None):
        loss, logits, new_state = original(inputs, targets, mask, state)
        calls.append({"length": inputs.shape[1], "state_in": state, "state_out": new_state})
        return loss, logits, new_state

    monkeypatch.setattr(model, "chunk_loss", spy)
    return calls


def float_tensors(state: StreamState) -> list[torch.Tensor]:
    return [*state.encoder, *state.decoder]


@pytest.mark.parametrize(
    ("length", "k", "expected_chunks"),
    [(50, 16, [16, 16, 16, 2]), (50, 7, [7] * 7 + [1])],
    ids=["lightning-1.9.5-k16", "lightning-1.9.5-k7"],
)
def test_the_lightning_1x_reference_traces(
    length: int, k: int, expected_chunks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on Lightning 1.9.5: chunk sizes, ``hiddens`` None at each batch start then detached, and
    one optimizer step per chunk (2 batches of 50 steps: global_step 8 with k=16, 16 with k=7)."""
    model = tiny_model(k)
    calls = record_chunks(model, monkeypatch)
    trainer = fit(model, batches_of(length, batches=2))
    assert [c["length"] for c in calls] == expected_chunks * 2
    first_of_batch = {0, len(expected_chunks)}
    for index, call in enumerate(calls):
        if index in first_of_batch:
            assert call["state_in"] is None
        else:
            assert all(not t.requires_grad for t in float_tensors(call["state_in"]))
        # before the cut the state does carry the chunk's graph: the detach is what stops the gradient
        assert all(t.requires_grad for t in float_tensors(call["state_out"]))
    assert trainer.global_step == 2 * len(expected_chunks)


@pytest.mark.parametrize(("length", "k"), [(1, 4), (8, 8), (9, 8), (31, 10), (40, 3)])
def test_optimizer_steps_per_batch_equal_the_number_of_chunks(
    length: int, k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model(k)
    steps = []
    original_step = torch.optim.AdamW.step

    def counting_step(self: torch.optim.Optimizer, *args: object, **kwargs: object) -> object:
        steps.append(1)
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    trainer = fit(model, batches_of(length, batches=3))
    assert len(steps) == 3 * math.ceil(length / k)
    assert trainer.global_step == 3 * math.ceil(length / k)


def test_global_step_counts_chunks_while_the_logged_step_counts_batches(tmp_path: Path) -> None:
    """What the README says about the step axis: ``global_step`` counts optimizer steps, i.e. chunks (4
    per batch here); the loggers' step column and ``log_every_n_steps`` count batches (every 2nd batch
    is logged, not every batch, as counting chunks would give)."""
    model = tiny_model(16)
    trainer = fit(model, batches_of(50, batches=3), logger=CSVLogger(tmp_path), log_every_n_steps=2)
    rows = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    step_rows = [dict(zip(header, row.split(","), strict=True)) for row in rows[1:]]
    logged_steps = [int(row["step"]) for row in step_rows if row["train/loss_step"]]
    assert trainer.global_step == 12
    assert logged_steps == [1]


def test_max_steps_and_every_n_train_steps_count_chunks_but_are_checked_between_batches(
    tmp_path: Path,
) -> None:
    """Lightning looks at ``global_step`` only when a batch ends, after all its chunks (4 here):
    ``max_steps=5`` stops at 8, and a checkpoint every 6 steps fires at 12 only (6 falls inside a batch)."""
    stopped = fit(tiny_model(16), batches_of(50, batches=3), max_steps=5)
    assert stopped.global_step == 8

    every_6 = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1)
    fit(tiny_model(16), batches_of(50, batches=3), callbacks=[every_6], enable_checkpointing=True)
    assert [path.name for path in tmp_path.glob("*.ckpt")] == ["epoch=0-step=12.ckpt"]


def test_a_chunk_loss_has_no_gradient_from_the_previous_chunk_inputs() -> None:
    model = tiny_model(5)
    embedded: list[torch.Tensor] = []
    model.encoder.embedding.register_forward_hook(lambda module, args, output: embedded.append(output))
    inputs, targets, lengths = next(iter(batches_of(10, batches=1)))
    mask = padding_mask(lengths, 10)
    first, second = slice(0, 5), slice(5, 10)
    _, _, state = model.chunk_loss(inputs[:, first], targets[:, first], mask[:, first], None)
    loss, _, _ = model.chunk_loss(inputs[:, second], targets[:, second], mask[:, second], model.carry(state))
    (gradient,) = torch.autograd.grad(loss, embedded[0], allow_unused=True)
    assert gradient is None or torch.count_nonzero(gradient) == 0

    # the same two chunks without the cut: the gradient reaches back, so the check above can fail
    embedded.clear()
    _, _, state = model.chunk_loss(inputs[:, first], targets[:, first], mask[:, first], None)
    loss, _, _ = model.chunk_loss(inputs[:, second], targets[:, second], mask[:, second], state)
    (gradient,) = torch.autograd.grad(loss, embedded[0])
    assert torch.count_nonzero(gradient) > 0


def test_each_backward_in_training_reaches_only_its_own_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a real fit, the gradients arriving at each chunk's embedded inputs (encoder and decoder) come
    from that chunk's backward only."""
    model = tiny_model(4)
    current = {"chunk": -1}
    arrivals: list[tuple[int, int]] = []
    original = model.chunk_loss

    def counting(*args: object) -> object:
        current["chunk"] += 1
        return original(*args)

    def watch(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        owner = current["chunk"]
        output.register_hook(lambda grad: arrivals.append((owner, current["chunk"])))

    monkeypatch.setattr(model, "chunk_loss", counting)
    model.encoder.embedding.register_forward_hook(watch)
    model.decoder.embedding.register_forward_hook(watch)
    fit(model, batches_of(18, batches=2))
    chunks = 2 * math.ceil(18 / 4)
    assert sorted({owner for owner, _ in arrivals}) == list(range(chunks))
    assert all(owner == during for owner, during in arrivals)


def test_chunked_evaluation_with_carried_state_equals_one_pass_over_the_whole_sequence() -> None:
    model = tiny_model(7).eval()
    inputs, targets, _ = next(iter(batches_of(40, batches=1)))
    with torch.no_grad():
        whole_logits, _ = teacher_forced(model.encoder, model.decoder, inputs, targets)
        whole_tokens, whole_greedy_logits, _ = model(inputs)
        chunked_tokens, chunked_greedy_logits = model.stream(inputs)
        state, pieces = None, []
        for start in range(0, 40, 7):
            piece = slice(start, start + 7)
            logits, state = teacher_forced(
                model.encoder, model.decoder, inputs[:, piece], targets[:, piece], state
            )
            state = model.carry(state)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole_logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(chunked_greedy_logits, whole_greedy_logits, atol=1e-6, rtol=1e-5)
    assert torch.equal(chunked_tokens, whole_tokens)


def test_resetting_the_state_at_each_chunk_changes_the_stream() -> None:
    """The ablation switch really cuts the stream: with it the chunked pass no longer equals the whole."""
    model = tiny_model(7, carry_states=False).eval()
    inputs, _, _ = next(iter(batches_of(40, batches=1)))
    with torch.no_grad():
        _, chunked_logits = model.stream(inputs)
        _, whole_logits, _ = model(inputs)
    torch.testing.assert_close(chunked_logits[:, :7], whole_logits[:, :7])
    assert not torch.allclose(chunked_logits[:, 7:], whole_logits[:, 7:], atol=1e-4)


def test_masked_padding_changes_neither_the_loss_nor_the_gradients() -> None:
    """A padded batch gives the token-weighted mean of each sequence's own loss and gradients, whatever
    tokens the padding holds."""
    model = tiny_model(64)
    generator = torch.Generator().manual_seed(3)
    lengths = torch.tensor([30, 17, 5])
    inputs = torch.randint(0, 10, (3, 30), generator=generator)
    targets = make_targets(inputs, "running_sum", 10, 2)
    mask = padding_mask(lengths, 30)

    def loss_and_gradients(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, list]:
        model.zero_grad()
        loss, _, _ = model.chunk_loss(x, y, m, None)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    garbage = torch.randint(0, 11, (3, 30), generator=generator)
    padded_loss, padded_grads = loss_and_gradients(
        torch.where(mask, inputs, 10), torch.where(mask, targets, 10), mask
    )
    garbage_loss, garbage_grads = loss_and_gradients(
        torch.where(mask, inputs, garbage), torch.where(mask, targets, garbage), mask
    )
    alone = [
        loss_and_gradients(inputs[i : i + 1, :n], targets[i : i + 1, :n], mask[i : i + 1, :n])
        for i, n in enumerate(lengths.tolist())
    ]
    weights = lengths.float() / lengths.sum()
    expected_loss = sum(w * loss for w, (loss, _) in zip(weights, alone, strict=True))
    torch.testing.assert_close(padded_loss, expected_loss)
    torch.testing.assert_close(garbage_loss, padded_loss)
    for index, (padded, garbage_grad) in enumerate(zip(padded_grads, garbage_grads, strict=True)):
        expected = sum(w * grads[index] for w, (_, grads) in zip(weights, alone, strict=True))
        torch.testing.assert_close(padded, expected, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(garbage_grad, padded, atol=1e-6, rtol=1e-4)


def gradient_norms_at_each_update(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Patch ``AdamW.step`` to record the norm of the gradients each update applies: after the closure
    Lightning passes it (which runs ``on_before_optimizer_step``), or as they are when a GradScaler calls it
    without one."""
    norms: list[float] = []
    original_step = torch.optim.AdamW.step

    def watching_step(self: torch.optim.Optimizer, closure: object = None) -> object:
        def watched() -> object:
            result = closure() if closure is not None else None
            grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
            norms.append(
                float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
            )
            return result

        return original_step(self, watched)

    monkeypatch.setattr(torch.optim.AdamW, "step", watching_step)
    return norms


def test_gradients_are_clipped_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Manual optimization clips through ``self.clip_gradients`` before every optimizer update."""
    model = tiny_model(8, gradient_clip_val=1e-3)
    norms = gradient_norms_at_each_update(monkeypatch)
    fit(model, batches_of(20, batches=1))
    assert len(norms) == 3
    assert max(norms) <= 1e-3 * (1 + 1e-4)


class ClippedInTrainingStep(Seq2Seq):
    """Clips where Lightning's manual-optimization docs show it: in ``training_step``, between
    ``manual_backward`` and ``optimizer.step()``."""

    def manual_backward(self, loss: torch.Tensor, *args: object, **kwargs: object) -> None:
        super().manual_backward(loss, *args, **kwargs)
        self.clip_gradients(self.optimizers(), self.hparams.gradient_clip_val, gradient_clip_algorithm="norm")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        pass


@pytest.mark.gpu
def test_under_16_mixed_the_true_gradients_are_clipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under 16-mixed Lightning scales the loss and unscales the gradients only inside ``optimizer.step()``:
    clipped in ``training_step`` they are the scaled ones (Lightning issue #18089), and the update applies
    a gradient about 65536 times smaller than the clip value instead of one of that norm."""
    norms = gradient_norms_at_each_update(monkeypatch)
    for model_class in (Seq2Seq, ClippedInTrainingStep):
        torch.manual_seed(0)
        model = model_class(hidden_size=12, embedding_dim=6, truncated_bptt_steps=8, gradient_clip_val=1e-3)
        norms.clear()
        fit(model, batches_of(20, batches=8), accelerator="gpu", devices=1, precision="16-mixed")
        assert norms  # the scaler skips the updates whose gradients overflowed, not all of them
        assert max(norms) <= 1e-3 * (1 + 1e-3)
        # every chunk's own gradient is far larger than 1e-3: clipped to that norm, not far below it
        clipped_to_the_value = min(norms) >= 1e-3 * 0.99
        assert clipped_to_the_value == (model_class is Seq2Seq), (model_class.__name__, min(norms))


def test_epoch_losses_are_means_per_token(tmp_path: Path) -> None:
    """Two batches of very different token counts (3 x 40 steps, then 3 sequences of 4, 3 and 2 steps):
    each stage's epoch loss is the mean over all real tokens, not the mean of the two batches' means."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([40, 40, 40, 4, 3, 2])
    mask = padding_mask(lengths, 40)
    inputs = torch.randint(0, 10, (6, 40), generator=generator)
    targets = make_targets(inputs, "running_sum", 10, 2).masked_fill(~mask, 10)
    dataset = TensorDataset(inputs.masked_fill(~mask, 10), targets, lengths)
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate_sequences)
    tokens = [120, 9]

    model = tiny_model(16, num_examples=0)
    trainer = fit(model, loader, logger=CSVLogger(tmp_path), log_every_n_steps=1)
    rows = [row.split(",") for row in (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()]
    column = {name: [float(row[i]) for row in rows[1:] if row[i]] for i, name in enumerate(rows[0])}
    first, second = column["train/loss_step"]
    (epoch,) = column["train/loss_epoch"]
    assert epoch == pytest.approx((first * tokens[0] + second * tokens[1]) / sum(tokens), rel=1e-6)
    assert abs(epoch - (first + second) / 2) > 1e-3  # what a mean of batch means would log instead

    model.eval()
    with torch.no_grad():  # every real token's loss, each sequence in one pass (chunks change nothing)
        token_losses = []
        for x, y, n in loader:
            logits, _ = teacher_forced(model.encoder, model.decoder, x, y)
            losses = F.cross_entropy(logits.transpose(1, 2), y.clamp(max=9), reduction="none")
            token_losses.append(losses[padding_mask(n, x.shape[1])])
    expected = float(torch.cat(token_losses).mean())
    assert trainer.validate(model, loader, verbose=False)[0]["val/loss"] == pytest.approx(expected, rel=1e-5)
    assert trainer.test(model, loader, verbose=False)[0]["test/loss"] == pytest.approx(expected, rel=1e-5)


def test_a_bad_chunk_size_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="truncated_bptt_steps"):
        Seq2Seq(truncated_bptt_steps=0)
