"""``python -m benchmarks.gpu_checks --out DIR``: every CUDA path of the project, checked in one run.

Written for a short lease of a GPU machine (one run of a few minutes, see benchmarks/README.md): it runs
the ``gpu``-marked tests and the fast command-line tests, fits every system through its real command line
at ``32-true``, ``16-mixed`` and ``bf16-mixed``, resumes one run from ``last.ckpt`` and compares it with an
uninterrupted one, times the default main job (``python -m systems.gan.train``), and writes what it found
to ``DIR/gpu_checks.json`` and ``DIR/gpu_checks.md``. ``--quick --accelerator cpu`` runs the same checks
with tiny sizes on a CPU (``16-mixed`` needs CUDA and is skipped there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.report import environment_line, markdown_table
from benchmarks.runner import cannot_run, environment, pick_device

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu-checks"))
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few batches (a CPU dry run)")
    parser.add_argument("--skip-pytest", action="store_true", help="leave out the two pytest runs")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # the fits run in a temporary working folder
    device = pick_device(args.accelerator)
    cuda = device.type == "cuda"
    accelerator = [
        "--trainer.accelerator=gpu" if cuda else "--trainer.accelerator=cpu",
        "--trainer.devices=1",
    ]
    precisions = ["32-true", "16-mixed", "bf16-mixed"] if cuda else ["32-true", "bf16-mixed"]
    checks: list[dict[str, Any]] = []
    payload = {"benchmark": "gpu_checks", "environment": environment(device), "checks": checks}
    args.out.mkdir(parents=True, exist_ok=True)

    def record(check: dict[str, Any]) -> None:
        """Keep a finding, and write all found so far: a run cut short by its time limit still reports."""
        checks.append(check)
        (args.out / "gpu_checks.json").write_text(json.dumps(payload, indent=2) + "\n")
        (args.out / "gpu_checks.md").write_text(document(payload))
        print(f"{check['status']:>6}  {check['name']}  ({check.get('seconds', '-')} s)", flush=True)

    # the most telling first: a time limit cuts the end
    if not args.skip_pytest:
        record(pytest_run("pytest -m gpu", ["-m", "gpu"]))
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        for system, flags in SYSTEMS.items():
            for precision in precisions:
                if note := cannot_run(system, precision, device):
                    record({"name": f"{system} fit at {precision}", "status": "skipped", "note": note})
                else:
                    record(fit_check(system, [*flags(args.quick), *accelerator], precision))
        record(main_job(args.quick, accelerator))
        record(resume_check([*CLASSIFIER_FLAGS(args.quick), *accelerator]))
    if not args.skip_pytest:
        record(pytest_run("command-line tests", ["-m", "not slow", "-k", CLI_SELECTION, *CLI_TESTS]))
    failed = [c["name"] for c in checks if c["status"] == "failed"]
    skipped = [c["name"] for c in checks if c["status"] == "skipped"]
    print(
        f"{len(checks) - len(failed) - len(skipped)} of {len(checks)} checks passed"
        + (f"; failed: {failed}" if failed else "")
        + (f"; skipped: {skipped}" if skipped else "")
    )
    return payload


# tests of the default suite that run a system's real command line, and Ctrl-C resumes that must be exact
# (on a GPU machine, with the accelerator on auto, they run on the GPU)
CLI_TESTS = [
    "tests/systems/classifier/test_classifier_cli.py",
    "tests/systems/gan/test_gan_cli.py",
    "tests/systems/seq2seq/test_seq2seq_cli.py",
    "tests/systems/transfer/test_transfer_cli.py",
    "tests/shared/test_interruptions.py",
]
CLI_SELECTION = "real_command_line or real_cli or ctrl_c_anywhere"


def pytest_run(name: str, selection: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    summary = (result.stdout.strip().splitlines() or [""])[-1]
    failures = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {
        "name": name,
        "status": "ok" if result.returncode == 0 else "failed",
        "seconds": round(time.perf_counter() - start, 1),
        "summary": summary,
        "failures": failures[:20],
    }


def CLASSIFIER_FLAGS(quick: bool) -> list[str]:
    return ["--trainer.limit_train_batches=4" if quick else "--trainer.limit_train_batches=10"]


def GAN_FLAGS(quick: bool) -> list[str]:
    # 12 batches: with the default (2, 1), four generator steps per epoch
    return ["--trainer.limit_train_batches=12", "--trainer.check_val_every_n_epoch=1"] + (
        ["--model.width=8"] if quick else []
    )


def SEQ2SEQ_FLAGS(quick: bool) -> list[str]:
    # sequences of 100-300 steps in chunks of 32: several chunks per batch
    return ["--trainer.limit_train_batches=3" if quick else "--trainer.limit_train_batches=8"]


def TRANSFER_FLAGS(quick: bool) -> list[str]:
    # random starting weights: the checks are about the frozen backbone, not about what it learned
    flags = ["--model.weights=null", "--model.channels_last=true", "--trainer.limit_train_batches=4"]
    return [*flags, "--data.init_args.image_size=16"] if quick else flags


SYSTEMS: dict[str, Callable[[bool], list[str]]] = {
    "classifier": CLASSIFIER_FLAGS,
    "gan": GAN_FLAGS,
    "seq2seq": SEQ2SEQ_FLAGS,
    "transfer": TRANSFER_FLAGS,
}


def run_cli(system: str, flags: list[str]) -> Any:
    """The system's real command line, in this process (no second CUDA start-up per run)."""
    module = __import__(f"systems.{system}.train", fromlist=["main"])
    return module.main(["fit", *QUIET, "--trainer.max_epochs=2", "--test_after_fit=false", *flags])


def fit_check(system: str, flags: list[str], precision: str) -> dict[str, Any]:
    """Two short epochs at ``precision``: it finishes, every logged loss is finite, and what the system
    promises holds (the GAN's step counts, the transfer system's bit-identical frozen backbone)."""
    name = f"{system} fit at {precision}"
    start = time.perf_counter()
    try:
        before: dict[str, torch.Tensor] = {}
        cli = run_cli(system, [*flags, f"--trainer.precision={precision}"]) if system != "transfer" else None
        if system == "transfer":
            cli = transfer_fit(flags, precision, before)
        found = system_facts(system, cli, before)
    except (Exception, SystemExit) as error:  # a failure is a finding, and the other checks still run
        return {"name": name, "status": "failed", "error": described(error)}
    losses = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if "loss" in k}
    problems = [k for k, v in losses.items() if not math.isfinite(v)] + found.pop("problems")
    return {
        "name": name,
        "status": "failed" if problems else "ok",
        "seconds": round(time.perf_counter() - start, 1),
        "global_step": cli.trainer.global_step,
        "losses": losses,
        **found,
        **({"problems": problems} if problems else {}),
    }


def described(error: BaseException) -> str:
    """A failure in a few lines: the exception, and for a refused command the message it printed."""
    return f"{type(error).__name__}: {error}"[:2000]


def transfer_fit(flags: list[str], precision: str, before: dict[str, torch.Tensor]) -> Any:
    """Build the run, keep its backbone's starting state, then fit."""
    from systems.transfer.train import main as transfer

    args = [*QUIET, "--trainer.max_epochs=2", "--test_after_fit=false", *flags]  # run=False: no subcommand
    cli = transfer([*args, f"--trainer.precision={precision}"], run=False)
    before.update({k: v.detach().cpu().clone() for k, v in cli.model.backbone.state_dict().items()})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def system_facts(system: str, cli: Any, before: dict[str, torch.Tensor]) -> dict[str, Any]:
    problems: list[str] = []
    facts: dict[str, Any] = {}
    if system == "gan":
        from systems.gan.model import is_critic_batch

        critic, generator = (adam_steps(opt) for opt in cli.trainer.optimizers)
        facts.update(critic_steps=critic, generator_steps=generator)
        # 2 epochs of 12 batches, the (n_critic, n_generator) cycle restarting each epoch, one step per batch
        # (global_step 24); at 16-mixed the GradScaler skips the steps whose gradients overflow while it
        # finds its scale
        hp = cli.model.hparams
        expected = 2 * sum(is_critic_batch(i, hp.n_critic, hp.n_generator) for i in range(12))
        skipped = 24 - critic - generator
        if cli.trainer.global_step != 24 or critic > expected or generator > 24 - expected or skipped > 5:
            problems.append(
                f"critic/generator steps {critic}/{generator} in {cli.trainer.global_step}, "
                f"expected {expected}/{24 - expected}"
            )
    if system == "transfer":
        after = cli.model.backbone.state_dict()
        changed = [k for k, v in before.items() if not torch.equal(v, after[k].detach().cpu())]
        facts["frozen_backbone_unchanged"] = not changed
        if changed:
            problems.append(f"frozen backbone changed: {changed[:3]}")
    if system == "seq2seq":
        facts["chunks_per_batch"] = cli.trainer.global_step / max(1, cli.trainer.num_training_batches * 2)
    return {**facts, "problems": problems}


def adam_steps(optimizer: torch.optim.Optimizer) -> int:
    """How many steps an Adam took: the step count in its state (0 when it never stepped)."""
    states = [s for s in optimizer.state.values() if "step" in s]
    return int(states[0]["step"]) if states else 0


def resume_check(flags: list[str]) -> dict[str, Any]:
    """A run stopped after one epoch and resumed from last.ckpt, against one that never stopped
    (``deterministic=True``): the largest weight difference, 0 where the device is deterministic."""
    start = time.perf_counter()
    try:
        flags = [*flags, "--trainer.deterministic=true"]
        straight = run_cli("classifier", flags)
        first = run_cli("classifier", [*flags, "--trainer.max_epochs=1"])
        last = Path(first.trainer.log_dir) / "checkpoints/last.ckpt"
        resumed = run_cli("classifier", [*flags, f"--ckpt_path={last}"])
    except (Exception, SystemExit) as error:
        return {"name": "classifier resume", "status": "failed", "error": described(error)}
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    difference = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    return {
        "name": "classifier resume from last.ckpt",
        # deterministic=True on CUDA uses deterministic kernels: the same bits are expected
        "status": "ok" if difference == 0 else "failed",
        "seconds": round(time.perf_counter() - start, 1),
        "max_weight_difference": difference,
    }


def main_job(quick: bool, accelerator: list[str]) -> dict[str, Any]:
    """``python -m systems.gan.train`` as a user runs it, timed from the outside."""
    command = [sys.executable, "-m", "systems.gan.train", "fit", *accelerator]
    command += ["--trainer.max_epochs=2"] if quick else []
    name = "main job: python -m systems.gan.train" + (" (2 epochs)" if quick else "")
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=MAIN_JOB_LIMIT_S,
        )
    except subprocess.TimeoutExpired as stopped:  # the other checks keep their time
        progress = (stopped.stdout or b"").decode(errors="replace").replace("\r", "\n").strip()
        return {
            "name": name,
            "status": f"stopped after {MAIN_JOB_LIMIT_S} s",
            "seconds": MAIN_JOB_LIMIT_S,
            "last_lines": progress.splitlines()[-1:],
        }
    return {
        "name": name,
        "status": "ok" if result.returncode == 0 else "failed",
        "seconds": round(time.perf_counter() - start, 1),
        "last_lines": result.stdout.strip().splitlines()[-3:] + result.stderr.strip().splitlines()[-2:],
    }


# 400 epochs on the CPU take 153 s; a limit leaves the checks after it their time within one GPU call
MAIN_JOB_LIMIT_S = 150


def document(payload: dict[str, Any]) -> str:
    rows = []
    for check in payload["checks"]:
        details = {k: v for k, v in check.items() if k not in ("name", "status", "seconds")}
        rows.append(
            [check["name"], check["status"], str(check.get("seconds", "")), json.dumps(details)[:300]]
        )
    return f"# GPU checks\n\n{environment_line(payload['environment'])}\n\n" + markdown_table(
        ["check", "status", "seconds", "details"], rows
    )


if __name__ == "__main__":
    main()
