"""One's own data for ``predict``: a folder of images, a file of sequences, a number of samples. Each takes its
format from the datamodule the checkpoint was trained with, which Lightning saved in it (``trained_datamodule``),
and writes what the model returns as files a person reads, in the predict run's own folder (a new ``version_N``
for each run, so a second run never overwrites the first)."""

from __future__ import annotations

import csv
import math
from importlib import import_module
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import make_grid, save_image

from datamodules.common import check_loader_arguments, make_loader, to_images
from shared.checkpoints import read_checkpoint
from shared.errors import UserError, require


def trained_datamodule(checkpoint: str | None) -> pl.LightningDataModule:
    """The datamodule ``checkpoint`` was trained with, built again from the arguments Lightning saved in it
    (``datamodule_hyper_parameters``, with the class path LightningCLI adds): it says how its data was made (image
    size, channels, value range, class names, tokens) without loading any."""
    require(
        checkpoint is not None, "predict on your own data needs the trained model: pass --ckpt_path=FILE."
    )
    saved = dict(read_checkpoint(checkpoint).get(pl.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY) or {})
    class_path = saved.pop("_class_path", None)  # LightningCLI's name for it
    how = "train it with this project's command line, whose datamodules save their arguments"
    require(class_path is not None, f"{checkpoint} does not say what data it was trained on: {how}.")
    module, name = class_path.rsplit(".", 1)
    data = getattr(import_module(module), name)
    require(issubclass(data, pl.LightningDataModule), f"{checkpoint} names {class_path} as its data.")
    return data(**{k: v for k, v in saved.items() if not k.startswith("_")})


class OwnData(pl.LightningDataModule):
    """What the three share: the trained datamodule (``trained``) and one process. Each has ``write_predictions``,
    which ``shared/cli.py``'s ``PredictionWriter`` calls with what ``predict_step`` returned for every batch."""

    def __init__(self, checkpoint: str | None, batch_size: int, num_workers: int) -> None:
        super().__init__()
        check_loader_arguments(batch_size, num_workers)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, 0
        self.trained = trained_datamodule(checkpoint)

    def setup(self, stage: str) -> None:
        fix = "predict it on one device (--trainer.devices=1)"
        require(
            self.trainer is None or self.trainer.world_size == 1,
            f"Your own data is written by one process: {fix}.",
        )


class ImageFolderDataModule(OwnData):
    """Every file in a folder as an image (PNG, JPEG or any format Pillow reads, any size), made as the training
    images were: grey or RGB as they were, resized to their size (a non-square image is stretched) and scaled to
    their value range; the class and its probability of each written to ``predictions.csv``.

    Args:
        path: the folder; every file in it (but hidden ones) must be an image. Subfolders are not read.
        checkpoint: the trained model; ``predict`` passes its ``--ckpt_path`` here.
        batch_size: images per batch.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self, path: str, checkpoint: str | None = None, batch_size: int = 64, num_workers: int = 0
    ) -> None:
        super().__init__(checkpoint, batch_size, num_workers)
        trained, kind = self.trained, type(self.trained).__name__
        labelled = all(
            hasattr(trained, fact) for fact in ("num_classes", "dims", "value_range", "mean", "std")
        )
        require(labelled, f"{checkpoint} was trained on {kind}, not labelled images.")
        self.num_classes, self.dims, self.mean, self.std = (
            trained.num_classes,
            trained.dims,
            trained.mean,
            trained.std,
        )
        self.class_names = getattr(trained, "class_names", None) or [
            str(i) for i in range(trained.num_classes)
        ]
        folder, fix = Path(path), "pass a folder of images with --data.init_args.path=DIR"
        require(folder.is_dir(), f"{folder} is {'a file' if folder.exists() else 'missing'}: {fix}.")
        self.files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        require(len(self.files) > 0, f"{folder} holds no files: put the images to classify there.")
        channels, side = trained.dims[0], trained.dims[-1]
        pixels = [read_image(file, channels) for file in self.files]
        self.images = torch.cat([to_images(p[None], side, trained.value_range) for p in pixels])

    def predict_dataloader(self) -> DataLoader:
        return make_loader(self, TensorDataset(self.images))

    def write_predictions(self, predictions: list[torch.Tensor], folder: Path) -> Path:
        probability, index = torch.cat(predictions).max(dim=1)
        path = folder / "predictions.csv"
        with open(path, "x", newline="") as file:  # "x": never over an earlier file
            rows = zip(self.files, index.tolist(), probability.tolist(), strict=True)
            csv.writer(file).writerows(
                [("file", "class", "probability")]
                + [(f.name, self.class_names[i], f"{p:.6f}") for f, i, p in rows]
            )
        return path


def read_image(file: Path, channels: int) -> torch.Tensor:
    """``file`` as a float ``(channels, H, W)`` tensor in [0, 1]: colour made grey (or grey made colour) by Pillow;
    an image of more than 8 bits per channel, or a file that is not an image, is refused in one sentence."""
    try:
        with Image.open(file) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UserError(
            f"{file} is not an image Pillow can read: remove it from the folder, or convert it to PNG."
        ) from None
    deep = image.mode in ("I", "F") or image.mode.startswith("I;")
    require(not deep, f"{file} has {image.mode} pixels, deeper than 8 bits: save it as an 8-bit PNG or JPEG.")
    return pil_to_tensor(image.convert("L" if channels == 1 else "RGB")).float() / 255.0


class LinesDataModule(OwnData):
    """Every line of a UTF-8 text file as one sequence in the tokens the model was trained on: numbers separated by
    spaces for ``SequenceDataModule`` (``3 1 4 1 5``), the line's characters for ``TextDataModule`` (a book). Blank
    lines are skipped. The model's output for each line, in the same form, goes to ``predictions.csv`` under the
    line's number in the file.

    Args:
        path: the text file.
        checkpoint: the trained model; ``predict`` passes its ``--ckpt_path`` here.
        batch_size: lines per batch.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self, path: str, checkpoint: str | None = None, batch_size: int = 32, num_workers: int = 0
    ) -> None:
        super().__init__(checkpoint, batch_size, num_workers)
        kind = type(self.trained).__name__
        require(hasattr(self.trained, "vocab_size"), f"{checkpoint} was trained on {kind}, not sequences.")
        self.vocab_size, self.characters = self.trained.vocab_size, hasattr(self.trained, "alphabet")
        fix = "pass a text file with --data.init_args.path=FILE, one sequence a line"
        try:
            lines = Path(path).read_text("utf-8").splitlines()
        except OSError as error:
            raise UserError(f"{path} cannot be read ({error.strerror}): {fix}.") from None
        except UnicodeDecodeError as error:
            raise UserError(f"{path} is not UTF-8 text (byte {error.start} is not): {fix}.") from None
        self.numbers = [n for n, line in enumerate(lines, 1) if line.strip()]
        require(len(self.numbers) > 0, f"{path} holds no sequences: {fix}.")
        self.sequences = [self.encode(lines[n - 1], f"{path}, line {n}") for n in self.numbers]

    def encode(self, line: str, where: str) -> torch.Tensor:
        if self.characters:
            unknown = "".join(sorted(set(line) - set(self.trained.alphabet)))
            require(not unknown, f"{where} has characters the book had not ({unknown!r}): remove them.")
            return self.trained.encode(line)
        tokens = "numbers from 0 to " + str(self.vocab_size - 1) + " separated by spaces"
        try:
            ids = torch.tensor([int(token) for token in line.split()])
        except ValueError:
            raise UserError(f"{where} is not {tokens}: write each sequence so.") from None
        require(
            bool(((ids >= 0) & (ids < self.vocab_size)).all()), f"{where} holds a token outside {tokens}."
        )
        return ids

    def decode(self, tokens: torch.Tensor) -> str:
        return self.trained.decode(tokens) if self.characters else " ".join(map(str, tokens.tolist()))

    def predict_dataloader(self) -> DataLoader:
        return make_loader(self, self.sequences, collate=self.collate)

    def collate(self, sequences: list[torch.Tensor]) -> tuple[torch.Tensor, None, torch.Tensor]:
        """Padded inputs, no targets, lengths: a ``SequenceBatch`` without its targets."""
        lengths = torch.tensor([len(s) for s in sequences])
        return pad_sequence(sequences, batch_first=True, padding_value=self.vocab_size), None, lengths

    def write_predictions(self, predictions: list[list[torch.Tensor]], folder: Path) -> Path:
        outputs = [self.decode(tokens) for batch in predictions for tokens in batch]
        path = folder / "predictions.csv"
        with open(path, "x", newline="", encoding="utf-8") as file:
            rows = zip(self.numbers, outputs, strict=True)
            csv.writer(file).writerows([("line", "output"), *rows])
        return path


class SamplesDataModule(OwnData):
    """``count`` samples of a generative model (the GAN), drawn by ``predict`` (seeded by ``seed_everything``) and
    written as ``samples/0000.png``, ``0001.png``... and ``samples/grid.png``, all of them in one grid.

    Args:
        count: samples to draw.
        checkpoint: the trained model; ``predict`` passes its ``--ckpt_path`` here.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self, count: int = 64, checkpoint: str | None = None, batch_size: int = 64, num_workers: int = 0
    ) -> None:
        require(count >= 1, f"data.count must be 1 or more, got {count}.")
        super().__init__(checkpoint, batch_size, num_workers)
        require(
            hasattr(self.trained, "dims"),
            f"{checkpoint} was trained on {type(self.trained).__name__}, not images.",
        )
        self.count, self.dims = count, self.trained.dims

    def predict_dataloader(self) -> DataLoader:
        return make_loader(self, TensorDataset(torch.arange(self.count)))  # one sample per item

    def write_predictions(self, predictions: list[torch.Tensor], folder: Path) -> Path:
        pixels = ((torch.cat(predictions) + 1) / 2).clamp(0, 1)  # from the GAN's [-1, 1]
        samples = folder / "samples"
        samples.mkdir()
        for i, image in enumerate(pixels):
            save_image(image, samples / f"{i:04d}.png")
        save_image(
            make_grid(pixels, nrow=math.ceil(len(pixels) ** 0.5), padding=1, pad_value=1.0),
            samples / "grid.png",
        )
        return samples
