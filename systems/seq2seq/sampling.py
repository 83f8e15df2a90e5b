"""Text the model writes itself, at each validation epoch's end: a file in the run's folder and TensorBoard's text."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

from shared.errors import require
from shared.visuals import epoch_file, tensorboards, to_trackers
from systems.seq2seq.model import Decoder, Encoder


@torch.no_grad()
def generate(
    encoder: Encoder,
    decoder: Decoder,
    prompt: Tensor,
    length: int,
    generator: torch.Generator,
    temperature: float,
) -> Tensor:
    """Read ``prompt`` (T,), then sample ``length`` next tokens, each fed back as the next input. The decoder's
    previous token is the previous target, which for next-token prediction is the current input."""
    tokens = prompt.view(1, -1)
    start = torch.full_like(tokens[:, :1], decoder.start_token)  # a stream's first step, as in training
    encoded, encoder_state = encoder(tokens)
    logits, decoder_state = decoder(encoded, torch.cat([start, tokens[:, 1:]], dim=1), None)
    written = []
    for _ in range(length):
        probabilities = torch.softmax(logits[0, -1].float() / temperature, dim=-1)
        token = torch.multinomial(probabilities.cpu(), 1, generator=generator).view(1, 1).to(tokens.device)
        written.append(token)
        encoded, encoder_state = encoder(token, encoder_state)
        logits, decoder_state = decoder(encoded, token, decoder_state)
    return torch.cat(written, dim=1)[0]


class TextSamples(pl.Callback):
    """At each validation epoch's end, ``length`` characters the model writes after the first ``prompt_length`` of
    the held-out text, as ``val_samples/epoch=NNN.txt``, a tracker's artifact and TensorBoard text. The draws come
    from a generator seeded by ``seed`` and the epoch, not the global random state, so that a resumed run trains as
    one that never stopped. Needs a datamodule with ``decode`` and ``texts`` (``TextDataModule``)."""

    def __init__(
        self, length: int = 600, prompt_length: int = 40, temperature: float = 0.8, seed: int = 0
    ) -> None:
        require(min(length, prompt_length) >= 1, "TextSamples' length and prompt_length must be 1 or more.")
        require(temperature > 0, f"TextSamples' temperature must be above 0, got {temperature}.")
        self.length, self.prompt_length = length, prompt_length
        self.temperature, self.seed = temperature, seed

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = trainer.datamodule
        require(hasattr(data, "decode"), "TextSamples needs a text datamodule: use --data=TextDataModule.")
        if (path := epoch_file(trainer, "val/samples", ".txt")) is None:
            return
        prompt = data.texts["val"][: self.prompt_length].to(pl_module.device)
        generator = torch.Generator().manual_seed(self.seed + trainer.current_epoch)
        written = generate(
            pl_module.encoder, pl_module.decoder, prompt, self.length, generator, self.temperature
        )
        text = f"{data.decode(prompt)}[...]{data.decode(written)}"
        path.write_text(
            f"epoch {trainer.current_epoch}, after the held-out text's [...]:\n\n{text}\n", "utf-8"
        )
        for writer in tensorboards(trainer):
            writer.add_text(
                "val/samples", "\n".join("    " + line for line in text.splitlines()), trainer.global_step
            )
        to_trackers(trainer, path, "val/samples")
