"""A sweep's report: its jobs ranked by a metric (report.md, report.csv, report.png), and for an
Optuna search the study's own views.

    from dlcourse.sweeps.report import report   # dlcourse-sweep-report outputs/multirun/<sweep>

Each job's folder holds its overrides (.hydra/overrides.yaml) and either metrics.json or, when
the job failed, failed.json with its error. The report reads those and nothing else
(dlcourse.sweeps.job_folders reads them, as data from a folder someone may have handed you).
"""

from __future__ import annotations

import csv
import html
import io
import logging
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlcourse.infrastructure.errors import UserError, clean
from dlcourse.infrastructure.files import open_new, write_file
from dlcourse.infrastructure.run_folder import JOURNAL
from dlcourse.sweeps.job_folders import Job, describe_error, read_jobs
from dlcourse.sweeps.search import journal_damage, open_storage

log = logging.getLogger(__name__)


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
    Every file goes through dlcourse.infrastructure.files: never through a link planted in the
    folder."""
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
    spread_columns = ("std", "low", "high", "n")  # a seed group's, beside its mean
    grouped = any(job.spread.get(metric) for job in jobs)
    extra = [f"{metric} {column}" for column in spread_columns] if grouped else []
    writer.writerow([csv_cell(text) for text in ["job", *swept, metric, *extra, "error"]])
    for job in jobs:
        settings = [job.overrides.get(key, "") for key in swept]
        spread = job.spread.get(metric, {})
        spreads = [spread.get(column, "") for column in spread_columns] if grouped else []
        values = [job.name, *settings, job.metrics.get(metric, ""), *spreads, job.error or ""]
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
        + [value_cell(job, metric)]
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


def value_cell(job: Job, metric: str) -> str:
    """The job's value; a seed group's mean ± standard deviation [95 % interval] (n seeds)."""
    spread = job.spread.get(metric)
    if spread is None:
        return f"{job.metrics[metric]:.4f}"
    return (
        f"{job.metrics[metric]:.4f} ± {spread['std']:.4f} [{spread['low']:.4f}, "
        f"{spread['high']:.4f}] ({spread['n']:g} seeds)"
    )


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


def optuna_views(sweep_dir: Path) -> str:
    """history.png and importances.png from the sweep's study (Optuna's matplotlib views), and
    how to open it in optuna-dashboard; Markdown for the report."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import optuna
    from optuna.visualization import matplotlib as views

    # Read only (the report changes no journal): a damaged line before the last is named. A
    # torn last line is one Optuna skips.
    data = (sweep_dir / JOURNAL).read_bytes()
    damage = journal_damage(data[: data.rfind(b"\n") + 1])
    if damage is not None:
        raise ValueError(f"damaged at {damage}")
    storage = open_storage("journal", sweep_dir)
    lines = ["", "## Optuna study", ""]
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
        lines.append(
            f"Study {cell(study.study_name)}: {len(study.trials)} trials, {len(complete)} complete."
        )
        pictures = {"history.png": views.plot_optimization_history}
        if len(study.directions) > 1:  # several objectives: the trials none beats on all
            pictures = {"pareto_front.png": views.plot_pareto_front}
        elif len(complete) >= 2:  # importances compare finished trials
            pictures["importances.png"] = views.plot_param_importances
        for name, view in pictures.items():
            save_view(view, study, sweep_dir / name)
            lines.append(f"- {name}: {view.__name__.removeprefix('plot_').replace('_', ' ')}")
    lines += [
        "",
        "To explore it in a browser (pip install optuna-dashboard):",
        "",
        f"    optuna-dashboard {clean(sweep_dir / JOURNAL)}",
    ]
    return "\n".join(lines) + "\n"


def save_view(view: Callable, study: Any, path: Path) -> None:
    """One of Optuna's matplotlib views of `study`, as a PNG (written as every file is)."""
    import matplotlib.pyplot as plt
    import optuna

    with warnings.catch_warnings():  # "experimental" since Optuna 2.2: said once, here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        view(study)
    figure = plt.gcf()
    figure.set_size_inches(7, 4.5)
    figure.tight_layout()
    try:
        with open_new(path, root=path.parent) as file:
            figure.savefig(file, format="png", dpi=100)
    finally:
        plt.close("all")
