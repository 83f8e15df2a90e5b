"""``python -m shared.export``: each system's serving network as a ``torch.export`` program and an ONNX file that give
the checkpoint's outputs, and the top README's snippets that run them with torch and onnxruntime alone."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from shared.export import export, main, validation_batch
from systems.classifier import Classifier
from tests.helpers import QUIET, ROOT, extra, refused, run_module

ONNX = ("onnx", "onnxscript", "onnxruntime")
ONE_BATCH = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
# small networks of each system: export traces every layer, and the seq2seq's decoder step by step
TINY = {
    "classifier": ["--model.width=4"],
    "gan": ["--model.width=4", "--model.judge=false", "--model.grid_size=8"],
    "seq2seq": [
        "--model.hidden_size=8",
        "--model.embedding_dim=4",
        "--model.num_layers=2",
        "--data.batch_size=4",
    ],
    "transfer": ["--model.weights=null", "--data.batch_size=8"],
}
SYSTEMS = sorted(TINY)


def fit(system: str, root: Path, flags: list[str] | None = None) -> Path:
    """A one-batch run of ``system`` in ``root`` (its ``TINY`` sizes unless ``flags``), as its ``train.py`` makes it; its
    ``last.ckpt``."""
    train = importlib.import_module(f"systems.{system}.train").main
    sizes = TINY[system] if flags is None else flags
    train([*QUIET, *ONE_BATCH, *sizes, "--test_after_fit=false", f"--trainer.default_root_dir={root}"])
    return root / f"lightning_logs/{system}/version_0/checkpoints/last.ckpt"


def checkpoint_module(system: str, ckpt: Path) -> Any:
    package = importlib.import_module(f"systems.{system}")
    return getattr(package, package.__all__[0]).load_from_checkpoint(ckpt, map_location="cpu").eval()


def stream(step: Callable[..., Any], hparams: Any, inputs: torch.Tensor) -> torch.Tensor:
    """The top README's loop: the seq2seq's exported step over whole sequences from the start state; the logits."""
    state = [torch.zeros(len(inputs), hparams.num_layers, hparams.hidden_size)] * 4
    state.append(torch.full((len(inputs),), hparams.vocab_size))
    logits = []
    for t in range(inputs.shape[1]):
        _, step_logits, *state = step(inputs[:, t], *state)
        logits.append(torch.as_tensor(step_logits))
    return torch.stack(logits, dim=1)


def served(
    system: str, run: Callable[..., Any], model: Any, batch: Any, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``run`` (an exported program, or an ONNX session's) and the checkpoint's LightningModule give for ``n``
    inputs: ``n`` images of the validation batch (logits), ``n`` latents (images), ``n`` sequences streamed (logits)."""
    with torch.no_grad():
        if system == "seq2seq":
            inputs = batch[0][:n, :40]
            return stream(run, model.hparams, inputs), model.stream(inputs)[1]
        if system == "gan":
            z = torch.randn(n, model.hparams.latent_dim, generator=torch.Generator().manual_seed(1))
            got, expected = run(z), model.render(z)
        else:
            got, expected = run(batch[0][:n]), model(batch[0][:n])
        return (got[0] if isinstance(got, list) else got), expected


@pytest.fixture
def classifier_run() -> tuple[Path, Classifier]:
    """A classifier's checkpoint where ``train.py`` puts it, beside the run's ``config.yaml``, and its module; written
    without a Trainer to keep the fast suite fast (the slow tests export the runs ``train.py`` makes, every system's)."""
    folder = Path("lightning_logs/classifier/version_0")
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(
        "data:\n  class_path: datamodules.DigitsDataModule\n  init_args: {batch_size: 16}\n"
    )
    model = Classifier(width=4).eval()
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    torch.save(checkpoint, folder / "checkpoints/last.ckpt")
    return folder / "checkpoints/last.ckpt", model


def test_the_classifier_exports_a_program_that_gives_the_checkpoints_logits(
    classifier_run: tuple[Path, Classifier], capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, model = classifier_run
    folder = main(["--ckpt_path", str(ckpt)])
    said = capsys.readouterr().out
    assert folder == ckpt.parents[1] / "export/last"  # in the run folder, named for the checkpoint
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt2"]
    assert (
        "Classifier's ConvNet: inputs x (batch, 1, 8, 8) float32; checked on the 16 of Classifier.exportable"
        in said
    )
    assert re.search(
        r"model.pt2: its outputs differ from the checkpoint's by at most \S+ \(tolerance 1e-05", said
    )
    program = torch.export.load(folder / "model.pt2").module()
    batch = validation_batch(ckpt.parents[1] / "config.yaml")
    for n in (1, 3):  # the batch is dynamic
        got, expected = served("classifier", program, model, batch, n)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_an_earlier_export_is_never_overwritten(
    classifier_run: tuple[Path, Classifier], capsys: pytest.CaptureFixture[str]
) -> None:
    Path("exported").mkdir()
    Path("exported/model.pt2").write_text("an earlier export")
    err = refused(capsys, main, ["--ckpt_path", str(classifier_run[0]), "--out", "exported"])
    assert (
        err
        == "error: exported/model.pt2 exists (an earlier export): pass --out with another folder, or remove it.\n"
    )
    assert Path("exported/model.pt2").read_text() == "an earlier export"


def test_a_checkpoint_that_is_missing_or_outside_its_run_folder_is_refused(
    classifier_run: tuple[Path, Classifier], capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(capsys, main, ["--ckpt_path", "lightning_logs/classifier/version_0/checkpoints/best.ckpt"])
    assert "There is no checkpoint at lightning_logs/classifier/version_0/checkpoints/best.ckpt" in err
    Path("elsewhere.ckpt").write_bytes(classifier_run[0].read_bytes())
    err = refused(capsys, main, ["--ckpt_path", "elsewhere.ckpt", "--out", "exported"])
    assert "elsewhere.ckpt is not in a run folder (lightning_logs/<system>/version_N/checkpoints/" in err
    assert not Path("exported").exists()


def test_onnx_without_the_extra_names_its_install(
    classifier_run: tuple[Path, Classifier],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "onnxruntime" else find_spec(n))
    err = refused(capsys, main, ["--ckpt_path", str(classifier_run[0]), "--out", "exported", "--onnx"])
    assert (
        err
        == 'error: --onnx needs onnx, onnxscript and onnxruntime (onnxruntime missing): pip install -e ".[onnx]".\n'
    )
    assert not Path("exported").exists()


@pytest.mark.slow
@pytest.mark.parametrize("system", SYSTEMS)
def test_every_system_exports_a_program_that_gives_the_checkpoints_outputs(
    system: str, tmp_path: Path
) -> None:
    ckpt = fit(system, tmp_path)
    folder = export(str(ckpt))
    assert (
        folder == ckpt.parents[1] / "export/last"
    )  # beside the run's checkpoints, named for the one exported
    program, model = torch.export.load(folder / "model.pt2").module(), checkpoint_module(system, ckpt)
    batch = validation_batch(ckpt.parents[1] / "config.yaml")
    for n in (1, 3):
        got, expected = served(system, program, model, batch, n)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("system", SYSTEMS)
def test_every_system_exports_onnx_that_onnxruntime_runs_with_the_checkpoints_outputs(
    system: str, tmp_path: Path
) -> None:
    extra(ONNX, 'pip install -e ".[onnx]"')
    import onnxruntime

    ckpt = fit(system, tmp_path)
    folder = export(str(ckpt), onnx=True)
    session = onnxruntime.InferenceSession(folder / "model.onnx")
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> list[Any]:
        feed = {name: t.numpy() for name, t in zip(names, inputs, strict=True)}
        return [torch.from_numpy(o) for o in session.run(None, feed)]

    model, batch = checkpoint_module(system, ckpt), validation_batch(ckpt.parents[1] / "config.yaml")
    for n in (1, 3):
        got, expected = served(system, run, model, batch, n)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def readme_snippets() -> list[str]:
    """The Python blocks of the top README's "Export and run without this repository"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Export and run without this repository")[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run_alone(code: str, cwd: Path, blocked: tuple[str, ...]) -> None:
    """``code`` in a new Python in which importing this repository, Lightning or ``blocked`` fails (``-I``: neither the
    current folder nor PYTHONPATH is on its path; the editable install's finder is refused as well)."""
    block = {
        "systems",
        "shared",
        "datamodules",
        "benchmarks",
        "tests",
        "pytorch_lightning",
        "lightning",
        *blocked,
    }
    guard = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {sorted(block)!r}:\n"
        "            raise ImportError(f'{name} is not installed here')\n"
        "sys.meta_path.insert(0, Refuse())\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", guard + code], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_the_readme_snippets_run_with_torch_and_onnxruntime_alone(tmp_path: Path) -> None:
    """The README's three blocks, on the exports its command writes, give the checkpoints' own predictions."""
    extra(ONNX, 'pip install -e ".[onnx]"')
    with_torch, with_onnxruntime, streamed = readme_snippets()
    # in this folder, as the README's command writes them; the seq2seq at the sizes the README says (its defaults)
    ckpts = {
        "classifier": fit("classifier", tmp_path),
        "seq2seq": fit("seq2seq", tmp_path, ["--data.batch_size=4"]),
    }
    for ckpt in ckpts.values():
        export(str(ckpt), onnx=True)
    classifier, seq2seq = (checkpoint_module(s, ckpt) for s, ckpt in ckpts.items())
    images = validation_batch(ckpts["classifier"].parents[1] / "config.yaml")[0][:10]
    np.save(tmp_path / "digits.npy", (images[:, 0] * 16).numpy())  # grey levels 0-16, as scikit-learn's
    with torch.no_grad():
        expected = classifier(images).argmax(dim=1).numpy()
    run_alone(with_torch + "np.save('classes.npy', classes.numpy())", tmp_path, ())
    assert (np.load(tmp_path / "classes.npy") == expected).all()
    run_alone(with_onnxruntime + "np.save('classes.npy', classes)", tmp_path, ("torch",))
    assert (np.load(tmp_path / "classes.npy") == expected).all()
    inputs = validation_batch(ckpts["seq2seq"].parents[1] / "config.yaml")[0][:3, :40]
    torch.save(inputs, tmp_path / "sequences.pt")
    run_alone(streamed + "torch.save((tokens, logits), 'streamed.pt')", tmp_path, ())
    tokens, last_logits = torch.load(tmp_path / "streamed.pt")
    with torch.no_grad():
        expected_tokens, expected_logits = seq2seq.stream(inputs)
    assert torch.equal(tokens, expected_tokens)
    torch.testing.assert_close(last_logits, expected_logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_the_real_command_line_refuses_a_missing_checkpoint_in_one_sentence(tmp_path: Path) -> None:
    done = run_module(
        "shared.export", "--ckpt_path=lightning_logs/gan/version_0/checkpoints/last.ckpt", cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: There is no checkpoint at lightning_logs/gan/version_0/checkpoints/last.ckpt: pass the path of an "
        "existing file.\n"
    )
    assert not list(tmp_path.iterdir())
