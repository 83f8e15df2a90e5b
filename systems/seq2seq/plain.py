"""``Seq2Seq.training_step`` without Lightning: truncated backprop through time in plain PyTorch.

``train`` is what pytorch/examples' word_language_model ``train()`` is, for this system's two nets: every
batch is cut into chunks along time, each chunk gets its own forward, backward and optimizer step, and the
state passes to the next chunk detached. Given the same batches and starting weights, it ends with the
weights the LightningModule ends with (``tests/systems/seq2seq/test_seq2seq_plain.py``). It needs torch
and ``model.py`` only; ``python -m systems.seq2seq.plain`` trains the default task with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from systems.seq2seq.model import (
    Decoder,
    Encoder,
    chunk_loss,
    detach_state,
    greedy,
    masked_cross_entropy,
    time_chunks,
)


def train(
    encoder: Encoder,
    decoder: Decoder,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    truncated_bptt_steps: int = 32,
    gradient_clip_val: float = 1.0,
    carry_states: bool = True,
    autocast_dtype: torch.dtype | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = masked_cross_entropy,
    on_step: Callable[[], None] = lambda: None,
) -> list[torch.Tensor]:
    """Train on ``batches`` of ``(inputs, targets, lengths)`` (CPU tensors, padded), one AdamW step per
    chunk of ``truncated_bptt_steps`` steps; ``on_step`` is called after each batch. The hyper-parameters
    mean what ``Seq2Seq``'s do (``loss_fn``: its ``loss_fn``, compiled or not). Returns each batch's loss per
    real token (detached)."""
    encoder.train()
    decoder.train()
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    # float16 needs its gradients scaled so that small ones do not vanish; bfloat16 and float32 do not
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    losses = []
    for batch in batches:
        inputs, targets, lengths = (t.to(device, non_blocking=True) for t in batch)
        mask = torch.arange(inputs.shape[1], device=device) < lengths.unsqueeze(1)  # the real steps
        state = None  # every batch starts a fresh stream
        loss_sum = torch.zeros((), device=device)
        for chunk in time_chunks(inputs.shape[1], truncated_bptt_steps):
            x, y, m = inputs[:, chunk], targets[:, chunk], mask[:, chunk]
            with torch.autocast(
                device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None, cache_enabled=False
            ):
                loss, _, state = chunk_loss(encoder, decoder, x, y, m, state, loss_fn)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            if gradient_clip_val > 0:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val)
            scaler.step(optimizer)  # one optimizer step per chunk
            scaler.update()
            state = detach_state(state) if carry_states else None  # gradients stop at the border
            loss_sum += loss.detach() * m.sum()
        losses.append(loss_sum / mask.sum())
        on_step()
    return losses


@torch.no_grad()
def evaluate(
    encoder: Encoder,
    decoder: Decoder,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    device: torch.device,
    truncated_bptt_steps: int = 32,
) -> tuple[float, float]:
    """The loss per real token (teacher-forced, as in training) and the token accuracy of the greedy stream
    (the decoder fed its own outputs), both chunk by chunk with the state carried."""
    encoder.eval()
    decoder.eval()
    loss_sum = correct = tokens = 0.0
    for batch in batches:
        inputs, targets, lengths = (t.to(device) for t in batch)
        mask = torch.arange(inputs.shape[1], device=device) < lengths.unsqueeze(1)
        forced = streamed = None
        for chunk in time_chunks(inputs.shape[1], truncated_bptt_steps):
            x, y, m = inputs[:, chunk], targets[:, chunk], mask[:, chunk]
            loss, _, forced = chunk_loss(encoder, decoder, x, y, m, forced)
            predicted, _, streamed = greedy(encoder, decoder, x, streamed)
            loss_sum += float(loss) * int(m.sum())
            correct += int(((predicted == y) & m).sum())
        tokens += int(mask.sum())
    return loss_sum / tokens, correct / tokens


def main(epochs: int = 5, **data: int) -> None:
    """Train the default task of ``config.yaml`` (running sums mod 10 over 100 to 300 steps, chunks of 32)
    for ``epochs`` epochs at a constant learning rate, then print the validation loss and accuracy;
    ``data`` overrides ``SequenceDataModule`` arguments (e.g. ``train_size=64``)."""
    # the project's generated data, as the LightningModule gets it (this import brings Lightning along);
    # any iterable of (inputs, targets, lengths) batches does
    from datamodules.sequences import SequenceDataModule

    torch.manual_seed(42)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datamodule = SequenceDataModule(**data)
    datamodule.setup()
    vocab_size = datamodule.vocab_size
    encoder = Encoder(vocab_size, embedding_dim=32, hidden_size=64, num_layers=1).to(device)
    decoder = Decoder(vocab_size, embedding_dim=32, hidden_size=64, num_layers=1).to(device)
    loader = datamodule.train_dataloader()

    def every_epoch() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for epoch in range(epochs):
            loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, as the Trainer asks for
            yield from loader

    losses = train(encoder, decoder, every_epoch(), device)
    loss, accuracy = evaluate(encoder, decoder, datamodule.val_dataloader(), device)
    print(f"trained {epochs} epochs, {len(losses)} batches: last batch's loss {float(losses[-1]):.4f}")
    print(f"validation: loss {loss:.4f} per token, token accuracy {accuracy:.4f} (greedy stream)")


if __name__ == "__main__":
    main()
