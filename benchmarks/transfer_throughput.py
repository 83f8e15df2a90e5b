"""Training images per second of the transfer system: backbone frozen (head only) against fully trained.

``python -m benchmarks.transfer_throughput`` times the same optimizer step the Trainer runs (forward,
cross-entropy, backward, AdamW step) on synthetic batches, after warm-up steps, and prints one JSON line
per setting with the median step time. Frozen steps skip the backbone's backward pass and its graph
(``torch.no_grad``); that, not the head, is what the ratio measures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from systems.transfer import TransferLearner


def median_step_seconds(
    model: TransferLearner, batch: int, size: int, steps: int, warmup: int, device: str
) -> float:
    model.to(device)
    model.train()
    model.set_backbone_mode()
    optimizer = model.configure_optimizers()
    channels = model.hparams.image_shape[0]
    x = torch.rand(batch, channels, size, size, device=device)
    y = torch.randint(0, model.hparams.num_classes, (batch,), device=device)
    times = []
    for step in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    parser.add_argument("--size", type=int, default=32, help="image side in px (32: the offline default)")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    settings = {
        "frozen": {},
        "full": {"unfreeze_at_epoch": 0, "unfreeze_stages": 5, "bn_policy": "train", "backbone_lr": 1e-3},
    }
    for name, overrides in settings.items():
        torch.manual_seed(0)
        model = TransferLearner(
            num_classes=10,
            image_shape=(args.channels, args.size, args.size),
            mean=(0.5,) * args.channels,
            std=(0.25,) * args.channels,
            arch=args.arch,
            channels_last=args.channels_last,
            **overrides,
        )
        seconds = median_step_seconds(model, args.batch, args.size, args.steps, args.warmup, args.device)
        record = {
            "setting": name,
            "arch": args.arch,
            "size": args.size,
            "batch": args.batch,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "channels_last": args.channels_last,
            "step_s": round(seconds, 4),
            "images_per_s": round(args.batch / seconds, 1),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
