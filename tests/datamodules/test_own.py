"""``predict`` on one's own data: a folder of images, a file of sequences, a number of GAN samples, each made as the
checkpoint's training data was and written as files a person reads; bad files refused with nothing written."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

from datamodules.own import ImageFolderDataModule, LinesDataModule, SamplesDataModule
from shared.errors import UserError
from systems.classifier import Classifier
from systems.classifier.train import main as classifier
from systems.gan.train import main as gan
from systems.seq2seq import Seq2Seq
from systems.seq2seq.train import main as seq2seq
from tests.helpers import QUIET, refused, run_module

TRAIN = [*QUIET, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
TRAIN += ["--test_after_fit=false"]
# digits 3, 5 and 7 at 12 px: the class names and the size a folder's images must get come from this data
DIGITS = ["--data.init_args.classes=[3, 5, 7]", "--data.init_args.image_size=12"]
SMALL = ["--model.width=4"]
FOLDER = ["--data=datamodules.ImageFolderDataModule", "--data.init_args.path=images"]
SEQ2SEQ = ["--model.hidden_size=16", "--model.embedding_dim=8", "--model.truncated_bptt_steps=4"]
TOKENS = ["--data.init_args.train_size=24", "--data.init_args.val_size=4", "--data.init_args.test_size=4"]
TOKENS += [
    "--data.init_args.min_length=10",
    "--data.init_args.max_length=20",
    "--data.init_args.batch_size=12",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier checkpoint trained on digits 3, 5, 7 at 12 px."""
    root = tmp_path_factory.mktemp("classifier")
    classifier([*TRAIN, *DIGITS, *SMALL, f"--trainer.default_root_dir={root}"])
    return root / "lightning_logs/classifier/version_0/checkpoints/last.ckpt"


def write_digits(folder: Path) -> dict[str, int]:
    """Five of the bundled digits as PNG files of other sizes (one not square, one RGB, one JPEG); name -> label."""
    folder.mkdir()
    digits, written = load_digits(), {}
    for i, (size, mode, suffix) in enumerate(
        [
            ((30, 30), "L", "png"),
            ((16, 24), "L", "png"),
            ((40, 40), "RGB", "png"),
            ((8, 8), "L", "png"),
            ((64, 64), "L", "jpg"),
        ]
    ):
        pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
        name = f"{i}.{suffix}"
        Image.fromarray(pixels).resize(size).convert(mode).save(folder / name)
        written[name] = int(digits.target[i])
    return written


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_a_folder_of_images_is_classified_as_the_model_itself_would(trained: Path) -> None:
    write_digits(Path("images"))
    run = classifier(["predict", *QUIET, *SMALL, f"--ckpt_path={trained}", *FOLDER])
    path = Path(run.trainer.log_dir) / "predictions.csv"
    written = rows(path)
    assert [r["file"] for r in written] == ["0.png", "1.png", "2.png", "3.png", "4.jpg"]
    model = Classifier.load_from_checkpoint(trained).eval()
    for (
        row
    ) in written:  # the test's own making of the inputs: grey, in [0, 1], resized to 12 px as the data was
        grey = np.array(Image.open(Path("images") / row["file"]).convert("L"))
        pixels = torch.from_numpy(grey)[None, None] / 255.0
        image = F.interpolate(pixels, (12, 12), mode="bilinear", antialias=True).clamp(0, 1)
        with torch.no_grad():
            probability, index = model(image).softmax(dim=1).max(dim=1)
        assert row["class"] == ["3", "5", "7"][int(index)]
        assert float(row["probability"]) == pytest.approx(float(probability), abs=1e-5)
    before = path.read_bytes()
    again = Path(classifier(["predict", *QUIET, *SMALL, f"--ckpt_path={trained}", *FOLDER]).trainer.log_dir)
    assert again != path.parent and path.read_bytes() == before  # a new run folder; the first file untouched
    assert (again / "predictions.csv").read_bytes() == before


def fake_checkpoint(data: str, **arguments: object) -> str:
    """A checkpoint holding only what the datamodules of one's own data read: the training data's arguments."""
    hyper_parameters = {"_class_path": f"datamodules.{data}", **arguments} if data else arguments
    torch.save({"state_dict": {}, "datamodule_hyper_parameters": hyper_parameters}, "model.ckpt")
    return "model.ckpt"


def _bad_folder(case: str) -> str:
    """A folder (or a file) of the kind ``case`` names, given as the path; the file the message must name."""
    images = Path("images")
    if case == "missing":
        return "images"
    images.mkdir(exist_ok=True)
    if case == "a file":
        Image.new("L", (8, 8)).save(images / "one.png")
        return "images/one.png"
    if case == "empty":
        return "images"
    Image.new("L", (8, 8)).save(images / "good.png")
    if case == "not an image":
        (images / "notes.txt").write_text("not a picture")
        return "images/notes.txt"
    Image.fromarray(np.full((8, 8), 300, dtype=np.uint16)).save(images / "deep.png")  # 16-bit grey
    return "images/deep.png"


@pytest.mark.parametrize("case", ["missing", "a file", "empty", "not an image", "16 bits"])
def test_a_bad_folder_is_refused_naming_the_file(case: str) -> None:
    named = _bad_folder(case)
    with pytest.raises(UserError, match=named):
        ImageFolderDataModule(named if case == "a file" else "images", fake_checkpoint("DigitsDataModule"))


def test_colour_and_grey_are_converted_to_the_trained_channels() -> None:
    Path("images").mkdir()
    Image.new("RGB", (5, 7), (255, 0, 0)).save("images/red.png")
    Image.new("L", (4, 4), 128).save("images/grey.png")
    grey = ImageFolderDataModule("images", fake_checkpoint("DigitsDataModule", value_range=[-1, 1])).images
    assert grey.shape == (2, 1, 8, 8)  # grey.png, red.png: resized to the digits' 8 px, in [-1, 1]
    assert torch.allclose(grey[0], torch.tensor(128 / 255 * 2 - 1), atol=1e-6)
    assert torch.allclose(grey[1], torch.tensor(76 / 255 * 2 - 1), atol=1e-6)  # red's luma, 76
    colour = ImageFolderDataModule("images", fake_checkpoint("CIFAR10DataModule", image_size=16)).images
    assert colour.shape == (2, 3, 16, 16) and colour[1, :, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_a_checkpoint_that_cannot_say_its_data_is_refused() -> None:
    Path("images").mkdir()
    Image.new("L", (8, 8)).save("images/a.png")
    with pytest.raises(UserError, match="--ckpt_path"):
        ImageFolderDataModule("images")
    with pytest.raises(UserError, match="does not say what data it was trained on"):
        ImageFolderDataModule("images", fake_checkpoint("", batch_size=3))
    with pytest.raises(UserError, match="trained on SequenceDataModule, not labelled images"):
        ImageFolderDataModule("images", fake_checkpoint("SequenceDataModule"))


def test_a_bad_folder_stops_predict_with_status_2_and_nothing_written(capsys) -> None:
    Path("images").mkdir()
    (Path("images") / "notes.txt").write_text("not a picture")
    model = fake_checkpoint("DigitsDataModule")  # refused before the weights are looked at
    message = refused(capsys, classifier, ["predict", *QUIET, f"--ckpt_path={model}", *FOLDER])
    fix = "remove it from the folder, or convert it to PNG"
    assert message == f"error: images/notes.txt is not an image Pillow can read: {fix}.\n"
    assert sorted(p.name for p in Path(".").iterdir()) == ["images", "model.ckpt"]
    other = ["--data.init_args.checkpoint=other.ckpt"]  # predict fills it from --ckpt_path: no second model
    assert "differs from --ckpt_path" in refused(
        capsys, classifier, ["predict", *QUIET, f"--ckpt_path={model}", *FOLDER, *other]
    )


def test_lines_are_read_in_the_tokens_of_the_training_data(capsys) -> None:
    Path("lines.txt").write_text("3 1 4\n\n  \n1 5 9 2 6\n")
    data = LinesDataModule("lines.txt", fake_checkpoint("SequenceDataModule", vocab_size=10))
    assert data.numbers == [1, 4] and data.vocab_size == 10
    inputs, _, lengths = data.collate(data.sequences)
    assert inputs.tolist() == [[3, 1, 4, 10, 10], [1, 5, 9, 2, 6]] and lengths.tolist() == [3, 5]  # 10 pads
    data.write_predictions([[torch.tensor([0, 3, 4]), torch.tensor([1, 6, 5, 7, 3])]], Path("."))
    assert rows(Path("predictions.csv")) == [
        {"line": "1", "output": "0 3 4"},
        {"line": "4", "output": "1 6 5 7 3"},
    ]
    Path("book.txt").write_text("in the beginning god created the heaven and the earth.")
    Path("lines.txt").write_text("the earth\n")
    book = LinesDataModule("lines.txt", fake_checkpoint("TextDataModule", path="book.txt", batch_size=2))
    assert book.decode(book.sequences[0]) == "the earth"
    for text, refusal in [
        ("1 2 x\n", "line 1 is not numbers from 0 to 9"),
        ("1\n10\n", "line 2 holds a token"),
    ]:
        Path("bad.txt").write_text(text)
        with pytest.raises(UserError, match=refusal):
            LinesDataModule("bad.txt", fake_checkpoint("SequenceDataModule", vocab_size=10))
    Path("bad.txt").write_text("the Earth\n")
    with pytest.raises(UserError, match="line 1 has characters the book had not \\('E'\\)"):
        LinesDataModule("bad.txt", fake_checkpoint("TextDataModule", path="book.txt", batch_size=2))
    Path("bad.txt").write_text("\n\n")
    with pytest.raises(UserError, match=r"bad\.txt holds no sequences"):
        LinesDataModule("bad.txt", fake_checkpoint("SequenceDataModule"))


def test_samples_are_written_one_png_each_and_a_grid() -> None:
    data = SamplesDataModule(5, fake_checkpoint("DigitsDataModule", value_range=[-1, 1]))
    assert data.dims == (1, 8, 8) and len(data.predict_dataloader().dataset) == 5
    images = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 1, 8, 8)
    folder = data.write_predictions([images[:2], images[2:]], Path("."))
    names = ["0000.png", "0001.png", "0002.png", "0003.png", "0004.png", "grid.png"]
    assert sorted(p.name for p in folder.iterdir()) == names
    assert [int(np.array(Image.open(folder / n))[0, 0, 0]) for n in names[:5]] == [0, 64, 128, 191, 255]
    assert Image.open(folder / "grid.png").size == (3 * 9 + 1, 2 * 9 + 1)  # 3 a row, 1-px borders


@pytest.mark.slow
def test_a_file_of_sequences_is_streamed_as_the_model_itself_would(capsys) -> None:
    seq2seq([*TRAIN, *SEQ2SEQ, *TOKENS])
    last = Path("lightning_logs/seq2seq/version_0/checkpoints/last.ckpt")
    sequences = ["3 1 4 1 5 9 2 6 5 3", "2 7 1 8 2", " ".join(["0"] * 24)]
    Path("lines.txt").write_text(f"{sequences[0]}\n\n{sequences[1]}\n{sequences[2]}\n")
    lines = ["--data=datamodules.LinesDataModule", "--data.init_args.path=lines.txt"]
    run = seq2seq(["predict", *QUIET, *SEQ2SEQ, f"--ckpt_path={last}", *lines])
    written = rows(Path(run.trainer.log_dir) / "predictions.csv")
    assert [r["line"] for r in written] == ["1", "3", "4"]  # numbered as in the file; the blank line skipped
    model = Seq2Seq.load_from_checkpoint(last).eval()
    for row, line in zip(written, sequences, strict=True):
        with torch.no_grad():  # each line alone, unpadded, through the model's own stream
            tokens, _ = model.stream(torch.tensor([[int(t) for t in line.split()]]))
        assert row["output"] == " ".join(map(str, tokens[0].tolist()))
    Path("bad.txt").write_text("1 2 3\n4 10 6\n")
    bad = ["predict", *QUIET, *SEQ2SEQ, f"--ckpt_path={last}", lines[0], "--data.init_args.path=bad.txt"]
    assert "bad.txt, line 2 holds a token outside numbers from 0 to 9" in refused(capsys, seq2seq, bad)
    assert sorted(p.name for p in Path("lightning_logs/seq2seq").iterdir()) == ["version_0", "version_1"]


@pytest.mark.slow
def test_lines_of_text_for_a_model_of_a_book() -> None:
    Path("book.txt").write_text("in the beginning god created the heaven and the earth. " * 40)
    book = [
        "--data=datamodules.TextDataModule",
        "--data.init_args.path=book.txt",
        "--data.init_args.batch_size=4",
    ]
    book += ["--data.init_args.seq_length=16", "--checkpoint.monitor=val/bpc", "--checkpoint.filename=best"]
    seq2seq([*TRAIN, *SEQ2SEQ, *book, "--model.carry_across_batches=true"])
    last = "lightning_logs/seq2seq/version_0/checkpoints/last.ckpt"
    Path("lines.txt").write_text("the earth\nand god\n")
    lines = ["--data=datamodules.LinesDataModule", "--data.init_args.path=lines.txt"]
    run = seq2seq(["predict", *QUIET, *SEQ2SEQ, f"--ckpt_path={last}", *lines])
    written = rows(Path(run.trainer.log_dir) / "predictions.csv")
    model, alphabet = Seq2Seq.load_from_checkpoint(last).eval(), sorted(set(Path("book.txt").read_text()))
    for row, line in zip(written, ["the earth", "and god"], strict=True):
        with torch.no_grad():  # the line's characters as the book's tokens, through the model's own stream
            tokens, _ = model.stream(torch.tensor([[alphabet.index(c) for c in line]]))
        assert row["output"] == "".join(alphabet[i] for i in tokens[0].tolist())


@pytest.mark.slow
def test_the_gan_writes_count_samples_and_a_grid() -> None:
    fast = [
        *QUIET,
        "--model.width=8",
        "--model.latent_dim=16",
        "--model.judge=false",
        "--test_after_fit=false",
    ]
    gan([*fast, "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=0"])
    last = "lightning_logs/gan/version_0/checkpoints/last.ckpt"
    samples = [
        "--data=datamodules.SamplesDataModule",
        "--data.init_args.count=5",
        "--data.init_args.batch_size=2",
    ]
    run = gan(["predict", *fast, f"--ckpt_path={last}", *samples])
    folder = Path(run.trainer.log_dir) / "samples"
    assert sorted(p.name for p in folder.iterdir()) == [*(f"000{i}.png" for i in range(5)), "grid.png"]
    drawn = [np.array(Image.open(folder / f"000{i}.png")) for i in range(5)]
    assert all(image.shape == (8, 8, 3) for image in drawn) and len({image.tobytes() for image in drawn}) == 5


@pytest.mark.slow
def test_a_bad_folder_through_the_real_command_line(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images/photo.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    model = fake_checkpoint("DigitsDataModule")
    result = run_module("systems.classifier.train", "predict", f"--ckpt_path={model}", *FOLDER, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    fix = "remove it from the folder, or convert it to PNG"
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: images/photo.png is not an image Pillow can read: {fix}."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "model.ckpt"]
