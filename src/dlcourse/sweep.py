"""Sweeps (Hydra multirun): failed jobs are recorded, not fatal, and a report compares the jobs.

    dlcourse-train -m model=linear,mlp optimizer.lr=0.01,0.1
    dlcourse-sweep-report outputs/multirun/<sweep> [--metric val/acc] [--mode max]

Each job's folder holds its overrides (.hydra/overrides.yaml) and either metrics.json or, when
the job failed, failed.json with its error. The report reads those and nothing else
(dlcourse.job_folders reads them, as data from a folder someone may have handed you).
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import logging
import math
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from dlcourse.config import SWEPT_KEYS
from dlcourse.errors import UserError, exit_on_user_error
from dlcourse.files import open_new, write_file
from dlcourse.interrupt import SWEEP_PROCESS
from dlcourse.job_folders import FAILED, Job, describe_error, read_jobs, read_json
from dlcourse.runs import clean
from dlcourse.search import JOURNAL

log = logging.getLogger(__name__)


def record_failure(job_dir: Path, error: BaseException, overrides: list[str] | None = None) -> None:
    """Write the job's error (and its overrides, for a job refused before it wrote its record)
    into its folder, where the sweep status and the report find it."""
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    details = {
        "error": text,
        "type": type(error).__name__,
        "overrides": overrides or [],
        "traceback": traceback.format_exc(),
    }
    # (A job refused before it started has no folder left: write_file makes it again.)
    write_file(job_dir / FAILED, json.dumps(details, indent=2) + "\n", root=job_dir.parent)
    log.error("This job failed (%s); the sweep goes on. Details: %s", text, job_dir / FAILED)


class SweepStatus(Callback):
    """Hydra callback (configs/hydra/default.yaml). Before a multirun: note which settings it
    varies, which name its job folders (config.job_name). After: list the failed jobs and exit
    non-zero if there were any, so scripts and CI see that the sweep was not clean."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        os.environ[SWEPT_KEYS] = ",".join(swept_keys(config))
        # The jobs that run in worker processes watch this process: they stop if it is killed.
        os.environ[SWEEP_PROCESS] = str(os.getpid())

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        os.environ.pop(SWEEP_PROCESS, None)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        failed = sorted(sweep_dir.glob(f"*/{FAILED}"))
        if failed:
            for path in failed:
                details, problem = read_json(path)
                error = details.get("error") if details else problem
                print(f"job {clean(path.parent.name)} failed: {clean(error)}", file=sys.stderr)
            print(f"{len(failed)} job(s) of the sweep in {sweep_dir} failed", file=sys.stderr)
            sys.exit(1)


def swept_keys(config: Any) -> list[str]:
    """The settings a sweep varies: the command line's sweeps (`optimizer.lr=0.01,0.1`,
    `range(...)`, ...) and a sweeper's own search space (Optuna's `hydra.sweeper.params`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    return keys + [str(key) for key in (config.hydra.sweeper.get("params") or {})]


def choose_metric(jobs: list[Job], metric: str | None, mode: str | None) -> tuple[str, str]:
    """The metric to sort by (by default, the one that picked each run's best checkpoint) and
    its direction, as the runs' metrics.json declare them (`monitor`, `higher_is_better`)."""
    available = sorted({name for job in jobs for name in job.metrics})
    names = ", ".join(clean(name) for name in available) or "none"
    declared = next((job.kinds for job in jobs if job.kinds), {})
    metric = metric or declared.get("monitor")
    if metric is None:
        problems = [f"job {clean(job.name)}: {p}" for job in jobs for p in job.unreadable]
        unread = f" (unreadable: {problems[0]}, {len(problems)} in all)" if problems else ""
        raise UserError(
            f"no job says which metric it monitors; choose --metric from: {names}{unread}"
        )
    if metric not in available:
        raise UserError(f"metric {clean(metric)!r} is in no job's metrics.json; available: {names}")
    higher_is_better = declared.get("higher_is_better", {}).get(
        metric.rsplit("/", 1)[-1]
    )  # val/acc → acc
    if mode is None and higher_is_better is None:
        raise UserError(
            f"the runs do not say whether a higher {clean(metric)} is better; pass --mode max or "
            f"--mode min"
        )
    return metric, mode or ("max" if higher_is_better else "min")


def report(sweep_dir: str | Path, metric: str | None = None, mode: str | None = None) -> str:
    """Write report.md, report.csv and report.png into the sweep folder; return the Markdown.
    Every file goes through dlcourse.files: never through a link planted in the folder."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    metric, mode = choose_metric(jobs, metric, mode)
    # A pruned job stopped part-way: it is listed, not ranked against the finished ones.
    done = [
        j
        for j in jobs
        if j.error is None
        and not j.pruned_at_epoch
        and math.isfinite(j.metrics.get(metric, math.nan))
    ]
    done.sort(key=lambda job: job.metrics[metric], reverse=mode == "max")
    all_keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    # The settings that differ between jobs are the table's columns (all, if none differ).
    swept = [k for k in all_keys if len({job.overrides.get(k) for job in jobs}) > 1] or all_keys
    markdown = markdown_report(sweep_dir.name, jobs, done, swept, metric, mode)
    if (sweep_dir / JOURNAL).is_file():  # an Optuna search: its own views, and the dashboard
        markdown += study_views(sweep_dir)
    write_file(sweep_dir / "report.md", markdown, root=sweep_dir)
    write_file(sweep_dir / "report.csv", csv_table(jobs, swept, metric), root=sweep_dir)
    plot(done, swept, metric, sweep_dir / "report.png")
    return markdown


def study_views(sweep_dir: Path) -> str:
    """The Optuna part of the report; a journal Optuna cannot read is named, and the table
    (which comes from the job folders) stands."""
    try:
        from dlcourse.search import optuna_views

        return optuna_views(sweep_dir)
    except UserError:  # a link refused, a folder that cannot be written: one line
        raise
    except ImportError:
        problem = "Optuna is not installed here (pip install -e '.[sweep]'): no study views"
    except Exception as error:  # Optuna's reader meets a damaged journal with any kind of error
        problem = f"{JOURNAL} could not be read ({describe_error(error)})"
    return "\n".join(["", "## Optuna study", "", f"- {cell(problem)}"]) + "\n"


def csv_table(jobs: list[Job], swept: list[str], metric: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([csv_cell(text) for text in ["job", *swept, metric, "error"]])
    for job in jobs:
        settings = [job.overrides.get(key, "") for key in swept]
        values = [job.name, *settings, job.metrics.get(metric, ""), job.error or ""]
        writer.writerow([csv_cell(value) for value in values])
    return buffer.getvalue()


# A cell a spreadsheet would run as a formula starts with one of these (CSV injection) ...
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# ... unless it is a plain number, which it reads as a number.
PLAIN_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def cell(text: Any) -> str:
    """`text` for report.md: one line, raw HTML escaped, and `|` (which would end a table cell)
    escaped, as is the backslash before it."""
    escaped = html.escape(clean(text), quote=False).replace("\\", "\\\\")
    return escaped.replace("|", "\\|")


def csv_cell(value: Any) -> str:
    """`value` for report.csv: one line; a text a spreadsheet would run as a formula is
    prefixed with ' (which makes it text)."""
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(text):
        text = "'" + text
    return clean(text)


def markdown_report(
    name: str, jobs: list[Job], done: list[Job], swept: list[str], metric: str, mode: str
) -> str:
    """The table of finished jobs, best first (★), then the jobs it could not rank, and why.
    Everything read from the job folders goes through `cell`."""
    failed = [job for job in jobs if job.error is not None]
    pruned = [job for job in jobs if job.pruned_at_epoch and job.error is None]
    no_value = [job for job in jobs if job not in done + failed + pruned]
    header = ["", "job", *swept, metric]
    rows = [
        ["★" if i == 0 else "", job.name, *(job.overrides.get(k, "") for k in swept)]
        + [f"{job.metrics[metric]:.4f}"]
        for i, job in enumerate(done)
    ]
    counts = f"{len(done)} done, " + (f"{len(pruned)} pruned, " if pruned else "")
    title = f"# Sweep {cell(name)}: {counts}{len(failed)} failed; sorted by {cell(metric)} ({mode})"
    lines = [title, "", table_row(header), "|" + " --- |" * len(header)]
    lines += [table_row(row) for row in rows]
    lines += section(
        "Pruned jobs (stopped early by the search's pruner; checkpoints and logs kept)",
        [
            f"{describe(job)}: after epoch {job.pruned_at_epoch:g}, {cell(metric)}="
            f"{job.metrics.get(metric, math.nan):.4f}"
            for job in pruned
        ],
    )
    lines += section("Failed jobs", [f"{describe(job)}: {cell(job.error)}" for job in failed])
    missing = [
        f"{describe(job)}: {cell(metric)}={cell(job.metrics.get(metric, 'missing'))}"
        for job in no_value
    ]
    lines += section(f"Jobs without a finite {cell(metric)}", missing)
    unreadable = [
        f"job {cell(job.name)}: {cell(problem)}" for job in jobs for problem in job.unreadable
    ]
    lines += section("Files that could not be read", unreadable)
    return "\n".join(lines) + "\n"


def table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell(text) for text in cells) + " |"


def describe(job: Job) -> str:
    settings = ", ".join(cell(f"{k}={v}") for k, v in job.overrides.items())
    return f"job {cell(job.name)} ({settings})"


def section(title: str, items: list[str]) -> list[str]:
    return ["", f"## {title}", "", *(f"- {item}" for item in items)] if items else []


MAX_PANELS = 12  # report.png's panels: a sweep of more settings shows the first ones


def plot(jobs: list[Job], swept: list[str], metric: str, path: Path) -> None:
    """The metric against each swept hyperparameter, one panel each."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    swept = swept[:MAX_PANELS]
    panels = max(len(swept), 1)
    figure, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2), squeeze=False)
    try:
        for axis, key in zip(axes[0], swept):
            values = [job.overrides.get(key, "") for job in jobs]
            numeric = all(is_number(value) for value in values)
            xs = [float(v) for v in values] if numeric else [label(v) for v in values]
            axis.scatter(xs, [job.metrics[metric] for job in jobs])
            if (
                numeric
                and len({x for x in xs if x > 0}) > 2
                and min(xs) > 0
                and max(xs) / min(xs) >= 100
            ):
                axis.set_xscale("log")
            axis.set_xlabel(label(key))
            axis.set_ylabel(label(metric))
        figure.tight_layout()
        with open_new(path, root=path.parent) as file:
            figure.savefig(file, format="png", dpi=100)
    finally:
        plt.close(figure)


def label(text: str) -> str:
    """`text` for a plot: one line, and `$` escaped, which matplotlib would read as maths."""
    return clean(text)[:60].replace("$", r"\$")


def is_number(text: str) -> bool:
    """A finite number (an axis cannot place 1e999 or nan)."""
    try:
        return math.isfinite(float(text))
    except (ValueError, OverflowError):
        return False


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="dlcourse-sweep-report", description="Compare the jobs of a sweep."
    )
    parser.add_argument("sweep_dir", type=Path, help="outputs/multirun/<sweep>")
    parser.add_argument(
        "--metric", help="metrics.json key to sort by (default: val/acc, or val/mse_hole)"
    )
    parser.add_argument("--mode", choices=["max", "min"], help="which direction is better")
    args = parser.parse_args(argv)
    print(report(args.sweep_dir, args.metric, args.mode))
    print(f"Wrote report.md, report.csv and the pictures in {args.sweep_dir}")


if __name__ == "__main__":
    main()
