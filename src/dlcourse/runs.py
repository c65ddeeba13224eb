"""The runs you have made, at a glance.

    dlcourse-runs                         # outputs/: every run and sweep job, newest first
    dlcourse-runs outputs/multirun --sort test --json

One row a run folder: its name, what ran (experiment or model), the settings its command line
chose, its best validation and its test figure of the metric it monitors, the epochs it ran,
whether it is running, finished, stopped (a checkpoint, no results: resume it) or failed (and
why), and when it started. Only the small files a run writes are read (never a checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import yaml

from dlcourse.errors import UserError, exit_on_user_error


@dataclass
class Run:
    name: str
    what: str  # the experiment, else the model
    settings: str  # the command line's overrides
    status: str  # running | finished | stopped | failed | empty
    started: str
    epochs: int | None = None
    monitor: str = ""
    val: float | None = None  # the best epoch's value of the monitored metric
    test: float | None = None  # the same metric on the test split, best weights
    error: str = ""
    higher_is_better: bool | None = None  # for the monitored metric: sorts best first


def find_runs(root: Path) -> list[Run]:
    """Every folder under `root` that a run wrote (it has a .hydra/ record or a checkpoint)."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass the folder your runs are in (outputs)")
    folders = {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    folders |= {p.parent.parent for p in root.rglob("checkpoints/last.pt")}
    return [read_run(folder, root) for folder in folders]


def read_run(folder: Path, root: Path) -> Run:
    choices, overrides = read_record(folder)
    what = str(choices.get("experiment") or choices.get("model") or "?")
    record = folder / ".hydra" if (folder / ".hydra").is_dir() else folder
    started = datetime.fromtimestamp(record.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    name = str(folder.relative_to(root))
    run = Run(name, what, " ".join(overrides), status_of(folder), started)
    metrics = read_json(folder / "metrics.json")
    if metrics:
        run.monitor = str(metrics.get("monitor", ""))
        run.val = metrics.get(run.monitor)
        run.test = metrics.get(run.monitor.replace("val/", "test/", 1))
        run.epochs = metrics.get("epochs_run", metrics.get("epochs"))
        base = run.monitor.rsplit("/", 1)[-1]
        run.higher_is_better = (metrics.get("higher_is_better") or {}).get(base)
    if run.status == "failed":
        run.error = last_error(folder)
    return run


def read_record(folder: Path) -> tuple[dict, list[str]]:
    """The config-group choices and command-line overrides a run started with, from the record
    its first start wrote (.hydra/hydra.yaml, read as plain YAML); none if it is unreadable."""
    try:
        hydra = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())["hydra"]
        choices = hydra["runtime"]["choices"] or {}
        overrides = [str(o) for o in hydra["overrides"]["task"] or []]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}, []
    return (choices if isinstance(choices, dict) else {}), overrides


def status_of(folder: Path) -> str:
    lock = read_json(folder / ".lock")
    if lock and lock.get("host") == socket.gethostname() and process_alive(lock.get("pid")):
        return "running"
    if (folder / "metrics.json").is_file():
        return "finished"
    if (folder / "failed.json").is_file() or last_error(folder):
        return "failed"
    return "stopped" if (folder / "checkpoints" / "last.pt").is_file() else "empty"


def process_alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_error(folder: Path) -> str:
    """Why the run failed: failed.json's error, else train.log's last `error:` line."""
    failure = read_json(folder / "failed.json")
    if failure:
        return str(failure.get("error", ""))
    try:
        lines = (folder / "train.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.split("error: ", 1)[1] for line in lines if "[ERROR] - error: " in line]
    return errors[-1] if errors else ""


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def table(runs: list[Run]) -> str:
    header = ["run", "what", "status", "started", "epochs", "best val", "test", "settings / error"]
    rows = [header]
    for run in runs:
        epochs = "" if run.epochs is None else str(run.epochs)
        val = figure(run.monitor, run.val)
        test = figure(run.monitor.replace("val/", "test/", 1), run.test)
        rows.append(
            [
                run.name,
                run.what,
                run.status,
                run.started,
                epochs,
                val,
                test,
                run.error or run.settings,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows
    )


def figure(name: str, value: float | None) -> str:
    return "" if value is None else f"{name}={value:.4f}"


def best_first(value: float | None, run: Run) -> tuple[bool, float]:
    """A sort key that puts the best value first (as the run's task says), missing ones last."""
    if value is None:
        return True, 0.0
    return False, -value if run.higher_is_better else value


SORTS = {
    "started": lambda run: run.started,  # newest first
    "name": lambda run: run.name,
    "val": lambda run: best_first(run.val, run),
    "test": lambda run: best_first(run.test, run),
}


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dlcourse-runs", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("outputs"))
    sorts = "started (newest first), name, or val / test (the best first)"
    parser.add_argument("--sort", choices=SORTS, default="started", help=sorts)
    parser.add_argument("--reverse", action="store_true", help="the other way round")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    descending = (args.sort == "started") != args.reverse
    runs = sorted(find_runs(args.folder), key=SORTS[args.sort], reverse=descending)
    print(json.dumps([asdict(run) for run in runs], indent=2) if args.json else table(runs))


if __name__ == "__main__":
    sys.exit(main())
