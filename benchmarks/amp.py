"""``python -m benchmarks.amp``: each system's LightningModule trained at fp32, TF32, fp16 and bf16 mixed
precision (and bf16 with channels_last for the convolutional ones): median step time, throughput, peak
memory, speed-up over true fp32.

On a CPU the GPU-only modes (TF32, fp16 autocast) are listed as skipped, not faked.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from matplotlib.figure import Figure

from benchmarks import report
from benchmarks.runner import (
    cannot_run,
    common_arguments,
    environment,
    make_loader,
    pick_device,
    results_folder,
    run_trainer,
    settings,
    workload_sizes,
)
from benchmarks.timing import Windows
from benchmarks.workloads import PRECISIONS, WORKLOADS


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common_arguments(parser, precisions=list(PRECISIONS), runs=3)
    args = parser.parse_args(argv)
    device = pick_device(args.accelerator)
    sizes = workload_sizes(args, device)
    rows: list[dict[str, Any]] = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        timed = []
        for precision, compile, label in settings(args):
            row: dict[str, Any] = {"workload": name, "precision": label, "unit": workload.unit}
            if precision.gpu_only and device.type != "cuda":
                rows.append({**row, "status": "skipped", "note": "needs a CUDA GPU"})
            elif precision.channels_last and not workload.convolutional:
                rows.append({**row, "status": "skipped", "note": "no convolutions"})
            elif note := cannot_run(name, precision.name, device):
                rows.append({**row, "status": "skipped", "note": note})
            else:
                rows.append({**row, "status": "ok", "run_step_s": [], "peak_memory_mib": None})
                timed.append((precision, compile, rows[-1]))
        # the modes take turns, run after run, so that a slow spell of the machine hits them all alike
        for _ in range(args.runs):
            for precision, compile, row in timed:
                windows = Windows(device, args.warmup, args.window, args.repeats)
                data = make_loader(workload, sizes[name], windows.total_steps, device, on_device=True)
                result = run_trainer(workload, sizes[name], precision, device, windows, data, compile)
                row["run_step_s"].append(result["median_step_s"])
                if result["peak_memory_mib"] is not None:
                    row["peak_memory_mib"] = max(row["peak_memory_mib"] or 0.0, result["peak_memory_mib"])
        for _, _, row in timed:
            steps = row["run_step_s"]
            row.update(median_step_s=statistics.median(steps), min_step_s=min(steps), max_step_s=max(steps))
            row["items_per_s"] = workload.items(sizes[name]) / row["median_step_s"]
            print(
                f"{name:>15} {row['precision']:>34}: {row['items_per_s']:10.1f} {workload.unit}/s", flush=True
            )
        fp32 = next((row for _, _, row in timed if row["precision"] == "fp32"), None)
        for _, _, row in timed:
            row["speedup_vs_fp32"] = fp32["median_step_s"] / row["median_step_s"] if fp32 else None
    payload = {
        "benchmark": "amp",
        "environment": environment(device),
        "sizes": sizes,
        "timing": {"warmup": args.warmup, "window": args.window, "repeats": args.repeats, "runs": args.runs},
        "rows": rows,
    }
    paths = report.write(results_folder(args.out, device), "amp", payload, table(payload), chart(rows))
    print("\n".join(str(p) for p in paths))
    return payload


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def table(payload: dict[str, Any]) -> str:
    lines = []
    for row in payload["rows"]:
        if row["status"] != "ok":
            lines.append([row["workload"], row["precision"], "skipped: " + row["note"], "", "", ""])
            continue
        memory = f"{row['peak_memory_mib']:,.0f}" if row["peak_memory_mib"] is not None else "n/a"
        speedup = f"{row['speedup_vs_fp32']:.2f}x" if row.get("speedup_vs_fp32") else ""
        lines.append(
            [
                row["workload"],
                row["precision"],
                f"{ms(row['median_step_s'])} ({ms(row['min_step_s'])}-{ms(row['max_step_s'])})",
                f"{row['items_per_s']:,.0f} {row['unit']}/s",
                memory,
                speedup,
            ]
        )
    header = [
        "workload",
        "precision",
        "step ms, median of runs (min-max)",
        "throughput",
        "peak MiB",
        "vs fp32",
    ]
    return report.document("Mixed precision against fp32", payload, header, lines)


def chart(rows: list[dict[str, Any]]) -> Figure:
    names = sorted({r["workload"] for r in rows})
    figure = Figure(figsize=(4 * len(names), 3.5))
    for axes, name in zip(figure.subplots(1, len(names), squeeze=False)[0], names, strict=True):
        ok = [r for r in rows if r["workload"] == name and r["status"] == "ok"]
        axes.bar([r["precision"] for r in ok], [r.get("speedup_vs_fp32") or 0 for r in ok], color="tab:blue")
        axes.axhline(1.0, color="black", linewidth=0.8)
        axes.set(title=name, ylabel="speed-up over fp32")
        axes.tick_params(axis="x", labelrotation=30)
    return figure


if __name__ == "__main__":
    main()
