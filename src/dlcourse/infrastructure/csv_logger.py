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
from collections.abc import Mapping
from pathlib import Path

from dlcourse.infrastructure.files import write_file
from dlcourse.infrastructure.loggers import NullLogger
from dlcourse.infrastructure.run_folder import METRICS_CSV


class CSVLogger(NullLogger):
    """Scalars to metrics.csv; the rest (pictures, histograms, settings) is left to the others:
    the settings are in .hydra/, the final metrics in metrics.json."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        """`purge_step`: a resumed run keeps the rows before it (logged up to its checkpoint)."""
        self.log_dir = Path(log_dir)
        self.path = self.log_dir / METRICS_CSV
        kept = read_rows(self.path) if purge_step is not None else []
        self.rows = [row for row in kept if row["step"] < (purge_step or 0)]

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Written when a step is complete (the next one begins) and at close: once per logged
        step, not once per call (train, val and test metrics of one step share a row)."""
        if self.rows and self.rows[-1]["step"] != step:
            self.write()
        if not self.rows or self.rows[-1]["step"] != step:
            self.rows.append({"step": step})
        self.rows[-1].update({name: float(value) for name, value in metrics.items()})

    def close(self) -> None:
        self.write()

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
