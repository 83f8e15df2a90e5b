"""What Lightning adds to the GAN's training time: the same two-step loop in plain PyTorch, timed beside it.

``python -m systems.gan.parity`` trains the default GAN (without the judge, validation, logging or
checkpoints) for a few epochs twice per repeat: once with ``Trainer.fit`` and once with the loop below,
which does the same work on the same batches (the datamodule's loader, its seeded shuffle), with the
same random draws in the same order. Both start from the same weights; the script reports the largest
weight difference at the end (0 when the two really did the same thing) beside the times and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pytorch_lightning as pl
import torch

from datamodules import DigitsDataModule
from systems.gan.module import GAN


def plain_loop(model: GAN, data: DigitsDataModule, epochs: int) -> None:
    """``GAN.training_step`` without Lightning: n_critic critic batches, n_generator generator batches."""
    hp = model.hparams
    generator, critic = model.generator, model.discriminator
    d_optimizer = torch.optim.Adam(critic.parameters(), lr=hp.lr_discriminator, betas=tuple(hp.betas))
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=hp.lr_generator, betas=tuple(hp.betas))
    schedulers = [
        torch.optim.lr_scheduler.LinearLR(opt, 1.0, hp.lr_decay_to, epochs)
        for opt in (d_optimizer, g_optimizer)
    ]
    loader = data.train_dataloader()
    model.train()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch_idx, (real, _) in enumerate(loader):
            n = real.shape[0]
            if batch_idx % (hp.n_critic + hp.n_generator) < hp.n_critic:
                generator.requires_grad_(False)
                with torch.no_grad():
                    fake = generator(torch.randn(n, hp.latent_dim))
                real_scores, fake_scores = critic(real), critic(fake)
                alpha = torch.rand(n, 1, 1, 1)
                points = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
                (grads,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
                penalty = ((grads.flatten(1).square().sum(1) + 1e-12).sqrt() - 1).square().mean()
                loss = fake_scores.mean() - real_scores.mean() + hp.gp_weight * penalty
                d_optimizer.zero_grad()
                loss.backward()
                d_optimizer.step()
                generator.requires_grad_(True)
            else:
                critic.requires_grad_(False)
                loss = -critic(generator(torch.randn(n, hp.latent_dim))).mean()
                g_optimizer.zero_grad()
                loss.backward()
                g_optimizer.step()
                critic.requires_grad_(True)
        for scheduler in schedulers:
            scheduler.step()


def lightning_fit(model: GAN, data: DigitsDataModule, epochs: int) -> None:
    """The same training through ``Trainer.fit``, with nothing switched on that the plain loop lacks."""
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data)


def measure(epochs: int, repeats: int, seed: int = 42) -> dict[str, object]:
    """Median wall times of both ways over ``repeats`` alternating runs, the ratio, and whether both agree."""
    times: dict[str, list[float]] = {"lightning": [], "plain": []}
    difference = 0.0
    for _ in range(repeats):
        finals = {}
        for name, train in (("lightning", lightning_fit), ("plain", plain_loop)):
            pl.seed_everything(seed, verbose=False)
            model = GAN(judge=False, lr_decay_to=0.2)
            data = DigitsDataModule(batch_size=64, value_range=(-1.0, 1.0), seed=seed)
            data.setup("fit")
            pl.seed_everything(seed, verbose=False)  # the same random stream from the first batch on
            start = time.perf_counter()
            train(model, data, epochs)
            times[name].append(time.perf_counter() - start)
            finals[name] = [p.detach().clone() for p in model.parameters()]
        difference = max(
            difference,
            max(
                (a - b).abs().max().item() for a, b in zip(finals["lightning"], finals["plain"], strict=True)
            ),
        )
    batches = epochs * len(data.train_dataloader())
    images = epochs * len(data.train_set)
    lightning, plain = (statistics.median(times[k]) for k in ("lightning", "plain"))
    return {
        "epochs": epochs,
        "batches": batches,
        "threads": torch.get_num_threads(),
        "lightning_s": round(lightning, 3),
        "plain_s": round(plain, 3),
        "ratio": round(lightning / plain, 3),
        "lightning_ms_per_batch": round(1000 * lightning / batches, 2),
        "plain_ms_per_batch": round(1000 * plain / batches, 2),
        "lightning_images_per_s": round(images / lightning),
        "plain_images_per_s": round(images / plain),
        "max_weight_difference": difference,
        "all_times_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs per run (20 batches each)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs of each way; medians reported"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.epochs, args.repeats)))


if __name__ == "__main__":
    main()
