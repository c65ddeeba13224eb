"""The runs you have made, at a glance.

    dlcourse-runs                         # outputs/: every run and sweep job, newest first
    dlcourse-runs outputs/multirun --sort test --json
    dlcourse-runs --tag baseline          # the runs started with tags=[baseline,...]

One row a run folder: its name, what ran (experiment or model, and its #tags), the settings its
command line chose, its best validation and its test figure of the metric it monitors, the
epochs it ran, whether it is running, finished, stopped (a checkpoint, no results: resume it) or
failed (and why), and when it started. Only the small files a run writes are read (never a
checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from dlcourse.infrastructure import locks
from dlcourse.infrastructure.command_line import resume_command
from dlcourse.infrastructure.errors import UserError, clean, exit_on_user_error
from dlcourse.infrastructure.files import as_number, read_json, read_tail
from dlcourse.infrastructure.run_folder import (
    CHECKPOINTS,
    FAILED,
    LAST,
    LOCK,
    LOG,
    LR_FIND,
    METRICS,
    RECORD,
    read_record,
    read_tags,
    shortest_path,
)


@dataclass
class Run:
    name: str
    what: str  # the experiment, else the model
    settings: str  # the command line's overrides
    status: str  # running | finished | stopped | failed | empty | lr-find
    started: str
    epochs: int | None = None
    monitor: str = ""
    val: float | None = None  # the best epoch's value of the monitored metric
    test: float | None = None  # the same metric on the test split, best weights
    error: str = ""
    higher_is_better: bool | None = None  # for the monitored metric: sorts best first
    tags: list[str] = field(default_factory=list)  # tags=[...] it was started with


def find_runs(root: Path) -> list[Run]:
    """Every folder under `root` that a run wrote (it has a .hydra/ record or a checkpoint)."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass the folder your runs are in (outputs)")
    folders = {p.parent for p in root.rglob(RECORD) if p.is_dir()}
    folders |= {p.parent.parent for p in root.rglob("checkpoints/last.pt")}
    return [read_run_or_say_why(folder, root) for folder in folders]


def read_run_or_say_why(folder: Path, root: Path) -> Run:
    """The run in `folder`; one that cannot be read is a row saying so, never the end of the
    table (a folder handed to you may be odd in ways no reader foresaw)."""
    try:
        return read_run(folder, root)
    except Exception as error:
        reason = f"could not be read ({type(error).__name__}: {clean(error)[:80]})"
        return Run(str(folder.relative_to(root)), "?", "", "unreadable", "", error=reason)


def read_run(folder: Path, root: Path) -> Run:
    choices, overrides = read_record(folder)
    what = next((c for c in (choices.get("experiment"), choices.get("model")) if c), "?")
    what = what if isinstance(what, str) else "?"
    record = folder / RECORD if (folder / RECORD).is_dir() else folder
    started = datetime.fromtimestamp(record.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
    name = str(folder.relative_to(root))
    run = Run(name, what, " ".join(overrides), status_of(folder), started, tags=read_tags(folder))
    metrics = read_json(folder / METRICS)[0]
    if metrics:
        # Only values of the right types are taken: a metric that is text, a list, or an
        # integer beyond a float, is left out rather than compared.
        monitor = metrics.get("monitor")
        run.monitor = monitor if isinstance(monitor, str) else ""
        run.val = as_number(metrics.get(run.monitor))
        run.test = as_number(metrics.get(run.monitor.replace("val/", "test/", 1)))
        epochs = metrics.get("epochs_run", metrics.get("epochs"))
        run.epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
        higher = metrics.get("higher_is_better")
        better = higher.get(run.monitor.rsplit("/", 1)[-1]) if isinstance(higher, dict) else None
        run.higher_is_better = better if isinstance(better, bool) else None
    if run.status == "failed":
        run.error = last_error(folder)
    if run.status == "lr-find":
        suggestion = as_number((read_json(folder / LR_FIND)[0] or {}).get("suggestion"))
        found = f"lr={suggestion:.3g}" if suggestion else "no lr suggested"  # first: never cut
        run.settings = f"{found}  {run.settings}"
    return run


def status_of(folder: Path) -> str:
    lock = read_json(folder / LOCK)[0]
    if lock and lock.get("host") == socket.gethostname() and process_alive(lock.get("pid")):
        return "running"
    if (folder / METRICS).is_file():
        return "finished"
    if (folder / LR_FIND).is_file():
        return "lr-find"  # dlcourse-lr-find's curve: no weights, nothing to resume
    if (folder / FAILED).is_file() or last_error(folder):
        return "failed"
    return "stopped" if (folder / CHECKPOINTS / LAST).is_file() else "empty"


def process_alive(pid: object) -> bool:
    """Whether `pid`, read from a lock (a file: any value), is a live process. Anything but an
    ordinary pid (text, ≤ 1, beyond the system's range, a 70-bit number) is not alive, and
    pids ≤ 0, which would reach process groups, are never signalled."""
    if not locks.is_pid(pid):
        return False
    try:
        os.kill(pid, 0)  # signal 0: sends nothing, only asks whether the pid exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_error(folder: Path) -> str:
    """Why the run failed: failed.json's error, else train.log's last `error:` line."""
    failure = read_json(folder / FAILED)[0]
    if failure:
        return str(failure.get("error", ""))
    try:
        lines = read_tail(folder / LOG).splitlines()
    except OSError:
        return ""
    errors = [line.split("error: ", 1)[1] for line in lines if "[ERROR] - error: " in line]
    return errors[-1] if errors else ""


def table(runs: list[Run], root: Path, width: int) -> str:
    """One row a run, in `width` columns (the terminal's). Its last entry (a stopped run's resume
    command, a failed one's error, else its settings) is cut to the width, but a command never
    is: it goes on the next line when it does not fit. When the folders' names leave no room for
    the rest, each name has a line of its own (a path: never cut)."""
    header = ["run", "what", "status", "started", "epochs", "best val", "test"]
    rows = [[clean(text) for text in cells(run, root)] for run in runs]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    on_own_line = sum(widths) + 2 * len(widths) > width
    if on_own_line:  # the name above, its facts indented below it
        widths[0] = 2
        header[0] = ""
    lines = ["run folder"] if on_own_line else []
    lines.append("  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip())
    for run, row in zip(runs, rows):
        if on_own_line:
            lines.append(row[0])
            row = ["", *row[1:]]
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths))
        last = clean(last_column(run, root))
        if run.status == "stopped" and len(line) + 2 + len(last) > width:
            lines += [line.rstrip(), f"    {last}"]  # a command is never cut
        else:
            lines.append(cut(f"{line}  {last}".rstrip(), width))
    return "\n".join(lines)


def cells(run: Run, root: Path) -> list[str]:
    """The row's entries; the folder as a path from here, which every command takes back."""
    epochs = "" if run.epochs is None else str(run.epochs)
    val = figure(run.monitor, run.val)
    test = figure(run.monitor.replace("val/", "test/", 1), run.test)
    folder = shortest_path(root / run.name)
    what = " ".join([run.what, *(f"#{tag}" for tag in run.tags)])
    return [folder, what, run.status, run.started[:16], epochs, val, test]


def cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def last_column(run: Run, root: Path) -> str:
    if run.status == "stopped":
        return f"resume with: {resume_command(root / run.name)}"
    return run.error or run.settings


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
    tag_help = "only runs started with this tag (tags=[...]); given twice, runs with both"
    parser.add_argument("--tag", action="append", default=[], help=tag_help)
    args = parser.parse_args(argv)
    descending = (args.sort == "started") != args.reverse
    runs = [run for run in find_runs(args.folder) if set(args.tag) <= set(run.tags)]
    runs = sorted(runs, key=SORTS[args.sort], reverse=descending)
    width = shutil.get_terminal_size((100, 24)).columns  # not a terminal: 100 (or $COLUMNS)
    shown = table(runs, args.folder, width)
    print(json.dumps([asdict(run) for run in runs], indent=2) if args.json else shown)


if __name__ == "__main__":
    sys.exit(main())
