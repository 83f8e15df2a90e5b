"""``python -m benchmarks.parity``: the same training step in a plain PyTorch loop and in the Trainer,
over the same loader of pinned host batches, alternated ``--runs`` times. Reports the time ratio
(Lightning / plain) with its spread, and whether the two loops computed the same thing: the same final
weights, and the same losses where the step returns them.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from matplotlib.figure import Figure

from benchmarks import report
from benchmarks.runner import (
    cannot_run,
    common_arguments,
    environment,
    make_loader,
    pick_device,
    results_folder,
    run_plain,
    run_trainer,
    settings,
    workload_sizes,
)
from benchmarks.timing import Windows
from benchmarks.workloads import WORKLOADS


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common_arguments(parser, precisions=["fp32", "bf16-mixed"], runs=4)
    args = parser.parse_args(argv)
    device = pick_device(args.accelerator)
    sizes = workload_sizes(args, device)
    rows = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        for precision, compile, label in settings(args):
            note = "needs CUDA" if precision.gpu_only and device.type != "cuda" else None
            if note := note or cannot_run(name, precision.name, device):
                rows.append({"workload": name, "precision": label, "status": "skipped", "note": note})
                continue
            plain, lightning = [], []
            for _ in range(args.runs):
                for runner, results in ((run_plain, plain), (run_trainer, lightning)):
                    windows = Windows(device, args.warmup, args.window, args.repeats)
                    data = make_loader(workload, sizes[name], windows.total_steps, device, on_device=False)
                    results.append(runner(workload, sizes[name], precision, device, windows, data, compile))
            rows.append(compare(name, label, plain, lightning, device))
            print(f"{name:>11} {label:>20}: Lightning / plain = {rows[-1]['ratios']}", flush=True)
    payload = {
        "benchmark": "parity",
        "environment": environment(device),
        "sizes": sizes,
        "timing": {"warmup": args.warmup, "window": args.window, "repeats": args.repeats, "runs": args.runs},
        "rows": rows,
    }
    paths = report.write(results_folder(args.out, device), "parity", payload, table(payload), chart(rows))
    print("\n".join(str(p) for p in paths))
    return payload


def compare(
    name: str,
    precision: str,
    plain: list[dict[str, Any]],
    lightning: list[dict[str, Any]],
    device: torch.device,
) -> dict[str, Any]:
    ratios = [lit["median_step_s"] / pln["median_step_s"] for pln, lit in zip(plain, lightning, strict=True)]
    # the same arithmetic ends in the same weights: on a CPU bit for bit, in fp32 and in bf16 alike (both
    # loops autocast without the weight-cast cache, as Lightning does); a GPU's kernels choose their own
    # order of summation, and a GAN amplifies that, so there the bar is a relative 2% and may not hold
    tolerance = 1e-5 if device.type == "cpu" else 2e-2
    weights_plain, weights_lightning = plain[0]["weights"], lightning[0]["weights"]
    difference = max((weights_plain[k] - weights_lightning[k]).abs().max().item() for k in weights_plain)
    scale = max(weights_plain[k].abs().max().item() for k in weights_plain)
    losses_plain, losses_lightning = plain[0]["losses"], lightning[0]["losses"]
    loss_difference = (
        max(abs(a - b) for a, b in zip(losses_plain, losses_lightning, strict=True))
        if losses_lightning and len(losses_plain) == len(losses_lightning)
        else None  # a manually optimized step returns no loss to compare
    )
    return {
        "workload": name,
        "precision": precision,
        "status": "ok",
        "plain_step_s": [r["median_step_s"] for r in plain],
        "lightning_step_s": [r["median_step_s"] for r in lightning],
        "ratios": [round(r, 4) for r in ratios],
        "median_ratio": statistics.median(ratios),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "max_weight_difference": difference,
        "max_loss_difference": loss_difference,
        "same_result": difference <= tolerance * max(1.0, scale)
        and (loss_difference is None or loss_difference <= tolerance * max(1.0, max(map(abs, losses_plain)))),
    }


def table(payload: dict[str, Any]) -> str:
    lines = []
    for row in payload["rows"]:
        if row["status"] != "ok":
            lines.append([row["workload"], row["precision"], "skipped: " + row["note"], "", "", ""])
            continue
        lines.append(
            [
                row["workload"],
                row["precision"],
                f"{statistics.median(row['plain_step_s']) * 1e3:.2f}",
                f"{statistics.median(row['lightning_step_s']) * 1e3:.2f}",
                f"{row['median_ratio']:.3f} ({row['min_ratio']:.3f}-{row['max_ratio']:.3f}): "
                + ", ".join(f"{r:.2f}" for r in row["ratios"]),
                ("yes" if row["same_result"] else "NO")
                + f" (weights differ by {row['max_weight_difference']:.1e})",
            ]
        )
    header = [
        "workload",
        "precision",
        "plain ms/step",
        "Lightning ms/step",
        "ratio median (min-max): runs",
        "same result",
    ]
    return report.document("Lightning against a plain PyTorch loop", payload, header, lines)


def chart(rows: list[dict[str, Any]]) -> Figure:
    ok = [r for r in rows if r["status"] == "ok"]
    figure = Figure(figsize=(max(4, 1.6 * len(ok)), 3.5))
    axes = figure.subplots()
    labels = [f"{r['workload']}\n{r['precision']}" for r in ok]
    axes.bar(labels, [r["median_ratio"] for r in ok], color="tab:orange")
    for x, r in enumerate(ok):
        axes.plot([x, x], [r["min_ratio"], r["max_ratio"]], color="black")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.axhline(1.05, color="gray", linestyle="--", linewidth=0.8)
    axes.set(ylabel="Lightning / plain loop (time per step)")
    return figure


if __name__ == "__main__":
    main()
