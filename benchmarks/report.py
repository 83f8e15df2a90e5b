"""Writing a benchmark's results: raw JSON, a markdown table and a PNG chart in one folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def write(folder: Path, name: str, payload: dict[str, Any], table: str, figure: Figure) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.json", folder / f"{name}.md", folder / f"{name}.png"]
    paths[0].write_text(json.dumps(payload, indent=2) + "\n")
    paths[1].write_text(table)
    figure.savefig(paths[2], dpi=100, bbox_inches="tight")
    return paths


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def document(title: str, payload: dict[str, Any], header: list[str], rows: list[list[str]]) -> str:
    """A results page: the title, the machine and versions, the sizes and timing, then the table."""
    sizes = "; ".join(f"{name}: {s}" for name, s in payload["sizes"].items())
    return (
        f"# {title}\n\n{environment_line(payload['environment'])}\n\n"
        f"Sizes: {sizes}. Timing: {payload['timing']}.\n\n" + markdown_table(header, rows)
    )


def environment_line(env: dict[str, str]) -> str:
    return (
        f"{env['device']}; torch {env['torch']}, pytorch-lightning {env['pytorch_lightning']}, "
        f"CUDA {env['cuda']}; {env['date']}"
    )
