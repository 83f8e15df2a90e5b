"""``python -m benchmarks.profile``: where the time of a short step goes, in the Trainer and in the plain loop.

One window of steps after the warm-up, in each loop, under ``torch.profiler``: the time per step, the host-device
synchronisations and copies per step, and the operators that take the most host time; then the Trainer once more
under Lightning's ``SimpleProfiler``: what each of its hooks costs per step. Writes ``profile.json``,
``profile.md``, Lightning's own report (``fit-hooks-WORKLOAD.txt``) and one Chrome trace per loop
(``trace-lightning-WORKLOAD.json``, ``trace-plain-WORKLOAD.json``: chrome://tracing or https://ui.perfetto.dev).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.profilers import SimpleProfiler
from torch.profiler import ProfilerActivity

from benchmarks import report
from benchmarks.runner import (
    environment,
    make_loader,
    pick_device,
    results_folder,
    run_plain,
    run_trainer,
    workload_sizes,
)
from benchmarks.timing import Windows
from benchmarks.workloads import PRECISIONS, WORKLOADS

# what makes the host wait for the device (a scalar read waits when its tensor is on the GPU), or copies
READS = ("aten::_local_scalar_dense",)
SYNCS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
)
COPIES = ("cudaMemcpyAsync", "cudaMemcpy")


class ProfiledWindow(Windows):
    """One timed window of ``window`` steps after ``warmup``, recorded by ``torch.profiler``."""

    def __init__(self, device: torch.device, warmup: int, window: int) -> None:
        super().__init__(device, warmup, window, repeats=1)
        cuda = [ProfilerActivity.CUDA] if device.type == "cuda" else []
        self.profiler = torch.profiler.profile(activities=[ProfilerActivity.CPU, *cuda])

    def tick(self) -> None:
        super().tick()
        if self.steps == self.warmup:
            self.profiler.start()
        elif self.steps == self.warmup + self.window:
            self.profiler.stop()


def operators(window: ProfiledWindow, top: int) -> dict[str, Any]:
    """Per step: scalar reads, syncs, copies, and the ``top`` operators by host time (self), with their device time."""
    events = window.profiler.key_averages()
    steps = window.window

    def per_step(names: tuple[str, ...]) -> float:
        return sum(e.count for e in events if e.key in names) / steps

    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "step_ms": window.per_step[0] * 1e3,
        "scalar_reads_per_step": per_step(READS),
        "syncs_per_step": per_step(SYNCS),
        "copies_per_step": per_step(COPIES),
        "operators": [
            {
                "name": e.key,
                "calls_per_step": e.count / steps,
                "host_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                "device_ms_per_step": getattr(e, "self_device_time_total", 0.0) / 1e3 / steps,
            }
            for e in ranked
        ],
    }


def hooks(profiler: SimpleProfiler, steps: int, top: int) -> list[dict[str, Any]]:
    """Lightning's actions by their cost per step (median duration x calls per step); nested ones overlap."""
    rows = [
        {
            "action": name,
            "calls_per_step": len(d) / steps,
            "ms_per_step": statistics.median(d) * 1e3 * len(d) / steps,
        }
        for name, d in profiler.recorded_durations.items()
        if len(d) >= steps  # every step's, not the run's start or end
    ]
    return sorted(rows, key=lambda r: r["ms_per_step"], reverse=True)[:top]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", default=["classifier"], choices=list(WORKLOADS))
    parser.add_argument("--precision", default="bf16-mixed", choices=list(PRECISIONS))
    parser.add_argument("--compile", action="store_true", help="the systems' compile=True")
    parser.add_argument("--preset", default=None, choices=["gpu", "cpu", "tiny"], help="default: gpu on CUDA")
    parser.add_argument("--size", nargs="*", default=[], metavar="WORKLOAD.KEY=N")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "gpu"])
    parser.add_argument("--warmup", type=int, default=20, help="steps before the profiled window")
    parser.add_argument("--window", type=int, default=20, help="steps profiled")
    parser.add_argument("--top", type=int, default=15, help="operators and hooks listed")
    parser.add_argument("--out", default="benchmarks/results", help="results root folder")
    args = parser.parse_args(argv)
    device, precision = pick_device(args.accelerator), PRECISIONS[args.precision]
    sizes, folder = workload_sizes(args, device), results_folder(Path(args.out), device)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.workloads:
        workload, row = (
            WORKLOADS[name],
            {"workload": name, "precision": args.precision, "compile": args.compile},
        )
        for side, runner in (("plain", run_plain), ("lightning", run_trainer)):
            window = ProfiledWindow(device, args.warmup, args.window)
            data = make_loader(workload, sizes[name], window.total_steps, device, on_device=False)
            runner(workload, sizes[name], precision, device, window, data, args.compile)
            row[side] = operators(window, args.top)
            window.profiler.export_chrome_trace(str(folder / f"trace-{side}-{name}.json"))
        window, simple = Windows(device, args.warmup, args.window, 1), SimpleProfiler(folder, f"hooks-{name}")
        data = make_loader(workload, sizes[name], window.total_steps, device, on_device=False)
        run_trainer(workload, sizes[name], precision, device, window, data, args.compile, profiler=simple)
        row["hooks"] = hooks(simple, window.total_steps, args.top)
        rows.append(row)
        print(
            f"{name}: plain {row['plain']['step_ms']:.2f} ms, Lightning {row['lightning']['step_ms']:.2f} ms"
        )
    payload = {"benchmark": "profile", "environment": environment(device), "sizes": sizes, "rows": rows}
    (folder / "profile.json").write_text(json.dumps(payload, indent=2) + "\n")
    (folder / "profile.md").write_text(document(payload))
    print(folder / "profile.md")
    return payload


def document(payload: dict[str, Any]) -> str:
    parts = [f"# Where a step's time goes\n\n{report.environment_line(payload['environment'])}\n"]
    for row in payload["rows"]:
        plain, lightning = row["plain"], row["lightning"]
        compiled = " + compile" if row["compile"] else ""
        parts.append(f"\n## {row['workload']}, {row['precision']}{compiled}\n\n")
        parts.append(
            report.markdown_table(
                ["", "ms per step", "scalar reads", "device syncs", "host-device copies"],
                [
                    [side, f"{r['step_ms']:.2f}"]
                    + [f"{r[k]:.1f}" for k in ("scalar_reads_per_step", "syncs_per_step", "copies_per_step")]
                    for side, r in (("plain", plain), ("Lightning", lightning))
                ],
            )
        )
        for side, r in (("plain", plain), ("Lightning", lightning)):
            parts.append(f"\n{side}: operators by host time (self)\n\n")
            parts.append(
                report.markdown_table(
                    ["operator", "calls/step", "host ms/step", "device ms/step"],
                    [
                        [
                            o["name"],
                            f"{o['calls_per_step']:.1f}",
                            f"{o['host_ms_per_step']:.3f}",
                            f"{o['device_ms_per_step']:.3f}",
                        ]
                        for o in r["operators"]
                    ],
                )
            )
        parts.append("\nLightning's hooks (SimpleProfiler; outer actions include the inner ones)\n\n")
        parts.append(
            report.markdown_table(
                ["action", "calls/step", "ms/step"],
                [
                    [h["action"], f"{h['calls_per_step']:.1f}", f"{h['ms_per_step']:.3f}"]
                    for h in row["hooks"]
                ],
            )
        )
    return "".join(parts)


if __name__ == "__main__":
    main()
