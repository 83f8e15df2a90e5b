"""A metrics table, one row per training epoch: what pl_bolts' ``PrintTableMetricsCallback`` did (bolts cannot be
installed beside Lightning 2). ``--trainer.callbacks+=shared.table.MetricsTable`` or a config's callbacks list."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class MetricsTable(Callback):
    """Prints each training epoch's metrics under their names. It reads ``callback_metrics``, never step outputs, so a
    ``validation_step`` that returns something cannot break it (it broke bolts'). ``rows`` keeps every row."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for name, value in sorted(trainer.callback_metrics.items()):
            if not name.endswith("_step") and value.numel() == 1:
                row[name.removesuffix("_epoch")] = value.item()
        self.rows.append(row)
        pl_module.print(format_row(row))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


def format_row(row: dict[str, Any]) -> str:
    """Names over values, each column as wide as its wider cell."""
    cells = [
        (name, f"{value:.4g}" if isinstance(value, float) else str(value)) for name, value in row.items()
    ]
    widths = [max(len(name), len(value)) for name, value in cells]
    header = " │ ".join(name.ljust(width) for (name, _), width in zip(cells, widths, strict=True))
    values = " │ ".join(value.ljust(width) for (_, value), width in zip(cells, widths, strict=True))
    return f"{header}\n{'─' * len(header)}\n{values}"
