"""The classifier's confusion matrix: the callback ``Classifier.configure_callbacks`` adds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch
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
        figure = confusion_figure(self.matrix)
        figure.savefig(png, dpi=100, bbox_inches="tight")
        np.savetxt(png.with_suffix(".csv"), self.matrix.numpy(), fmt="%d", delimiter=",")
        for writer in tensorboards(trainer):
            writer.add_figure("val/confusion_matrix", figure, global_step=trainer.global_step)
        for path in (png, png.with_suffix(".csv")):
            to_trackers(trainer, path, "val/confusion_matrix")


def confusion_figure(matrix: torch.Tensor) -> Figure:
    """Rows are true classes, columns predicted ones, each cell its count: drawn by torchmetrics."""
    from matplotlib.figure import Figure
    from torchmetrics.utilities.plot import plot_confusion_matrix

    figure, axes = plot_confusion_matrix(matrix, ax=Figure(figsize=(5, 4.5)).subplots())
    axes.set(xlabel="predicted", ylabel="true")
    axes.set_title(f"validation: {int(matrix.diagonal().sum())} of {int(matrix.sum())} right")
    return figure
