"""``python -m shared.export --ckpt_path=lightning_logs/<system>/version_N/checkpoints/<file>.ckpt [--onnx] [--out DIR]``:
the network a system serves with, as a ``torch.export`` program (``model.pt2``) and, with ``--onnx``, an ONNX file
(``model.onnx``), each loaded back and checked against the checkpoint's own network on real inputs: a validation
batch of the run's data (the GAN: its grid's latents). Both run with torch (or onnxruntime) alone: the top README's "Export and run without this repository".

What each system serves, and with what input, is its LightningModule's ``exportable(batch)``; the system is the one
whose run folder holds the checkpoint (``lightning_logs/<system>/``), its data the run's ``config.yaml``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from torch import Tensor

from shared.checkpoints import read_checkpoint
from shared.errors import reported, require

# nn.LSTM's weights list, re-made at every call: harmless to the program, which reads the weights themselves
warnings.filterwarnings(
    "ignore", message=r"The tensor attributes .*_flat_weights.* were assigned during export"
)

# fp32 outputs: |exported - checkpoint| <= ATOL + RTOL * |checkpoint|; integer outputs (tokens): equal
ATOL, RTOL = 1e-5, 1e-5
TOLERANCE = f"tolerance {ATOL:g} + {RTOL:g} x |output|"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def parse(args: list[str] | None) -> argparse.Namespace:
    what = "A system's serving network as a torch.export program (model.pt2) and, with --onnx, an ONNX file, each "
    what += "checked against the checkpoint on a validation batch of the run's data."
    parser = argparse.ArgumentParser(prog="python -m shared.export", description=what, allow_abbrev=False)
    parser.add_argument(
        "--ckpt_path", required=True, help="a checkpoint in its run folder (.../checkpoints/)"
    )
    parser.add_argument(
        "--out", help="the folder to write (default: the run folder's export/<checkpoint name>)"
    )
    parser.add_argument("--onnx", action="store_true", help='also model.onnx (pip install -e ".[onnx]")')
    return parser.parse_args(args)


def run_folder(path: Path) -> tuple[Path, str]:
    """The run folder of a checkpoint written by a system's ``train.py``, and the system's name."""
    folder, parts = path.parent.parent, path.resolve().parts
    where = "lightning_logs/<system>/version_N/checkpoints/"
    inside = (
        path.parent.name == "checkpoints" and (folder / "config.yaml").is_file() and "lightning_logs" in parts
    )
    require(inside, f"{path} is not in a run folder ({where}, beside config.yaml): pass a checkpoint there.")
    return folder, parts[len(parts) - parts[::-1].index("lightning_logs")]


def load_system(name: str, checkpoint: dict[str, Any]) -> pl.LightningModule:
    """The LightningModule that ``systems.<name>`` exports, built from the checkpoint's hyper-parameters and weights."""
    package = importlib.import_module(f"systems.{name}")
    (system,) = (c for n in package.__all__ if issubclass(c := getattr(package, n), pl.LightningModule))
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
    # a compiled run's networks are built eager: export traces them itself
    model = system(**hparams | {"compile": False})
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def validation_batch(config: Path) -> Any:
    """The first validation batch of the datamodule the run's ``config.yaml`` names, as it trained on it."""
    data = yaml.safe_load(config.read_text())["data"]
    module, name = data["class_path"].rsplit(".", 1)
    datamodule = getattr(importlib.import_module(module), name)(**data.get("init_args", {}))
    datamodule.prepare_data()
    datamodule.setup("validate")
    return next(iter(datamodule.val_dataloader()))


def as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def check(path: Path, outputs: list[Any], expected: list[Tensor]) -> None:
    """``path``'s outputs against the checkpoint's: a difference past the tolerance is a bug (a traceback)."""
    worst = 0.0
    for output, reference in zip(outputs, expected, strict=True):
        output = torch.as_tensor(output)
        assert output.shape == reference.shape, (
            f"{path}: an output of shape {tuple(output.shape)}, not {tuple(reference.shape)}"
        )
        worst = max(worst, float((output.double() - reference.double()).abs().max()))
        if reference.is_floating_point():
            assert torch.allclose(output, reference, atol=ATOL, rtol=RTOL), (
                f"{path}: {worst:.3g} off, past {TOLERANCE}"
            )
        else:
            assert torch.equal(output, reference), f"{path}: integer outputs differ by up to {worst:.0f}"
    print(f"{path}: its outputs differ from the checkpoint's by at most {worst:.3g} ({TOLERANCE})")


def export(ckpt_path: str, out: str | None = None, onnx: bool = False) -> Path:
    """``model.pt2`` (and ``model.onnx``) written into ``out`` and checked; the folder."""
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None] if onnx else []
    require(
        not missing,
        f'--onnx needs onnx, onnxscript and onnxruntime ({", ".join(missing)} missing): pip install -e ".[onnx]".',
    )
    checkpoint = read_checkpoint(ckpt_path)
    folder, name = run_folder(Path(ckpt_path))
    target = Path(out) if out else folder / "export" / Path(ckpt_path).stem
    files = [target / "model.pt2", *([target / "model.onnx"] if onnx else [])]
    taken = [str(f) for f in files if f.exists()]
    earlier = f"{' and '.join(taken)} exist{'s' if len(taken) == 1 else ''} (an earlier export)"
    require(not taken, f"{earlier}: pass --out with another folder, or remove it.")
    model = load_system(name, checkpoint)
    network, inputs = model.exportable(validation_batch(folder / "config.yaml"))
    with torch.no_grad():
        expected = as_list(network.eval()(*inputs))
    names = list(inspect.signature(network.forward).parameters)
    shapes = [
        f"{n} ({', '.join(map(str, ['batch', *t.shape[1:]]))}) {str(t.dtype)[6:]}"
        for n, t in zip(names, inputs, strict=True)
    ]
    print(
        f"{type(model).__name__}'s {type(network).__name__}: inputs {', '.join(shapes)}; checked on the {len(inputs[0])} "
        f"of {type(model).__name__}.exportable"
    )
    # the batch is dynamic: the first dimension of every input and output
    batch = torch.export.Dim("batch")
    program = torch.export.export(network, inputs, dynamic_shapes=[{0: batch} for _ in inputs])
    target.mkdir(parents=True, exist_ok=True)
    try:
        torch.export.save(program, files[0])
        with torch.no_grad():
            check(files[0], as_list(torch.export.load(files[0]).module()(*inputs)), expected)
        if onnx:
            torch.onnx.export(
                program, inputs, files[1], input_names=names, dynamo=True, external_data=False, verbose=False
            )
            check(files[1], run_onnx(files[1], inputs), expected)
    except BaseException:  # nothing unchecked is left behind
        for file in files:
            file.unlink(missing_ok=True)
        raise
    return target


def run_onnx(path: Path, inputs: tuple[Tensor, ...]) -> list[Any]:
    """The ONNX file's outputs for ``inputs`` in onnxruntime, as the README runs it."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)})


def main(args: list[str] | None = None) -> Path:
    options = parse(args)
    with reported():
        return export(options.ckpt_path, options.out, options.onnx)


if __name__ == "__main__":
    main()
