"""The classifier's confusion matrix: the callback ``Classifier.configure_callbacks`` adds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torchmetrics.functional.classification import multiclass_confusion_matrix

from shared.visuals import epoch_file, tensorboards, to_trackers

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class ConfusionMatrix(pl.Callback):
    """Each validation's confusion matrix over the whole split: ``val_confusion_matrix/epoch=NNN.png`` and ``.csv``
    (the counts) in the run's folder, TensorBoard's figure, a tracker's artifacts. 1.x handed the steps' outputs to
    ``validation_epoch_end(outputs)``; here ``validation_step`` returns its predictions and labels, kept until the
    epoch's end, then freed."""

    def __init__(self) -> None:
        self.outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.matrix: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, *args: Any) -> None:
        self.outputs.append(outputs)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        preds, targets = (torch.cat(kept) for kept in zip(*self.outputs, strict=True))
        self.outputs.clear()
        # under DDP each process kept its own shard: gather them so the matrix covers the whole split
        preds, targets = pl_module.all_gather(preds).flatten(), pl_module.all_gather(targets).flatten()
        self.matrix = multiclass_confusion_matrix(preds, targets, pl_module.hparams.num_classes).cpu()
        if (png := epoch_file(trainer, "val/confusion_matrix", ".png")) is None:  # every process asks
            return
        confusion_figure(self.matrix).savefig(png, dpi=100)  # drawn once: TensorBoard gets the PNG
        np.savetxt(png.with_suffix(".csv"), self.matrix.numpy(), fmt="%d", delimiter=",")
        for writer in tensorboards(trainer):
            image = np.asarray(Image.open(png).convert("RGB"))
            writer.add_image("val/confusion_matrix", image, trainer.global_step, dataformats="HWC")
        for path in (png, png.with_suffix(".csv")):
            to_trackers(trainer, path, "val/confusion_matrix")


def confusion_figure(matrix: torch.Tensor) -> Figure:
    """Rows are true classes, columns predicted ones, each cell its count (a plain ``imshow``: torchmetrics'
    ``plot_confusion_matrix`` draws the same at twice the cost, which a run pays at every epoch)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5))
    axes, counts = figure.subplots(), matrix.numpy()
    axes.imshow(counts)
    for (true, predicted), count in np.ndenumerate(counts):  # dark text on the bright cells
        colour = "black" if count > counts.max() / 2 else "white"
        axes.text(predicted, true, count, ha="center", va="center", color=colour)
    classes = range(len(counts))
    axes.set(xticks=classes, yticks=classes, xlabel="predicted", ylabel="true")
    axes.set_title(f"validation: {int(matrix.diagonal().sum())} of {int(matrix.sum())} right")
    return figure
