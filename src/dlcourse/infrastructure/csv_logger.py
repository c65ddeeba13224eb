"""metrics.csv: a run's metrics as a table (logger=csv), for pandas, a spreadsheet or a plot script.

    dlcourse-train logger=[tensorboard,csv]
    python -c 'import pandas; print(pandas.read_csv("outputs/runs/<run>/metrics.csv"))'

A row per logged step (what is logged at one step shares its row, as Lightning's CSVLogger
writes it), a column per metric, `step` first. The file is written whole each time (renamed
into place), so it is never seen half written and a new metric simply adds a column.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from dlcourse.infrastructure.files import write_file
from dlcourse.infrastructure.run_folder import METRICS_CSV


class CSVLogger:
    """Scalars to metrics.csv; pictures, histograms and layouts are TensorBoard's only."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        """`purge_step`: a resumed run keeps the rows before it (logged up to its checkpoint)."""
        self.log_dir = Path(log_dir)
        self.path = self.log_dir / METRICS_CSV
        kept = read_rows(self.path) if purge_step is not None else []
        self.rows = [row for row in kept if row["step"] < (purge_step or 0)]

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.rows or self.rows[-1]["step"] != step:
            self.rows.append({"step": step})
        self.rows[-1].update({name: float(value) for name, value in metrics.items()})
        self.write()

    def log_hparams(
        self, hparams: Mapping[str, object], metrics: Mapping[str, float], step: int
    ) -> None:
        pass  # the settings are in .hydra/, the final metrics in metrics.json

    def log_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        pass

    def log_histograms(self, model: nn.Module, step: int) -> None:
        pass

    def log_train_and_val(self, names: Iterable[str]) -> None:
        pass

    def log_files(self, folder: Path) -> None:
        pass

    def close(self) -> None:
        pass

    def write(self) -> None:
        columns = ["step"] + sorted({name for row in self.rows for name in row} - {"step"})
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_file(self.path, text.getvalue(), root=self.log_dir)


def read_rows(path: Path) -> list[dict[str, float]]:
    """The rows of an earlier metrics.csv (data: a cell that is not a number is left out)."""
    if not path.is_file() or path.is_symlink():
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(path.read_text(errors="replace"))):
        values = {name: number(text) for name, text in row.items() if name}
        values = {name: value for name, value in values.items() if value is not None}
        if math.isfinite(values.get("step", math.nan)):
            rows.append({**values, "step": int(values["step"])})
    return rows


def number(text: str | None) -> float | None:
    """A cell's number (nan and inf too: a diverged loss), or None."""
    try:
        return float(text or "")
    except ValueError:
        return None
