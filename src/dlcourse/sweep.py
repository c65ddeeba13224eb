"""Sweeps (Hydra multirun): failed jobs are recorded, not fatal, and a report compares the jobs.

    dlcourse-train -m model=linear,mlp optimizer.lr=0.01,0.1
    dlcourse-sweep-report outputs/multirun/<sweep> [--metric val/acc] [--mode max]

Each job's folder holds its overrides (.hydra/overrides.yaml) and either metrics.json or, when
the job failed, failed.json with its error. The report reads those and nothing else.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from dlcourse.config import SWEPT_KEYS
from dlcourse.errors import UserError, exit_on_user_error
from dlcourse.search import JOURNAL

log = logging.getLogger(__name__)
FAILED = "failed.json"


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
    job_dir.mkdir(parents=True, exist_ok=True)  # a job refused before it started has no folder left
    (job_dir / FAILED).write_text(json.dumps(details, indent=2) + "\n")
    log.error("This job failed (%s); the sweep goes on. Details: %s", text, job_dir / FAILED)


class SweepStatus(Callback):
    """Hydra callback (configs/hydra/default.yaml). Before a multirun: note which settings it
    varies, which name its job folders (config.job_name). After: list the failed jobs and exit
    non-zero if there were any, so scripts and CI see that the sweep was not clean."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        os.environ[SWEPT_KEYS] = ",".join(swept_keys(config))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        failed = sorted(sweep_dir.glob(f"*/{FAILED}"))
        if failed:
            for path in failed:
                details, problem = read_json(path)
                error = details.get("error") if details else problem
                print(f"job {path.parent.name} failed: {error}", file=sys.stderr)
            print(f"{len(failed)} job(s) of the sweep in {sweep_dir} failed", file=sys.stderr)
            sys.exit(1)


def swept_keys(config: Any) -> list[str]:
    """The settings a sweep varies: the command line's sweeps (`optimizer.lr=0.01,0.1`,
    `range(...)`, ...) and a sweeper's own search space (Optuna's `hydra.sweeper.params`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    return keys + [str(key) for key in (config.hydra.sweeper.get("params") or {})]


@dataclass
class Job:
    name: str
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, Any] = field(
        default_factory=dict
    )  # metrics.json's monitor and higher_is_better
    error: str | None = None  # why the job has no metrics: its failed.json, or still running
    pruned_at_epoch: int | None = None  # stopped early by an Optuna search's pruner
    unreadable: list[str] = field(default_factory=list)  # its files that could not be read


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """A JSON object from a file, or None and why not (a job killed mid-write leaves half one)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"{path.name} could not be read ({type(error).__name__}: {str(error)[:80]})"
    return (value, None) if isinstance(value, dict) else (None, f"{path.name} holds no JSON object")


def read_overrides(job_dir: Path) -> tuple[list[str], str | None]:
    """The job's overrides from .hydra/overrides.yaml (else its failed.json), or why not."""
    import yaml  # comes with hydra / omegaconf

    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        details, _ = read_json(job_dir / FAILED)
        return [str(o) for o in (details or {}).get("overrides") or []], None
    try:  # safe_load: plain data only (a !!python/object tag is an error, never run)
        overrides = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        return [], f".hydra/overrides.yaml could not be read ({type(error).__name__})"
    if not isinstance(overrides, list) or not all(
        isinstance(o, str) and "=" in o for o in overrides
    ):
        return [], ".hydra/overrides.yaml is not a list of key=value overrides"
    return overrides, None


def read_job(job_dir: Path) -> Job:
    overrides, problem = read_overrides(job_dir)
    job = Job(
        job_dir.name,
        dict(item.split("=", 1) for item in overrides),
        unreadable=[problem] if problem else [],
    )
    if (job_dir / "metrics.json").is_file():
        metrics, problem = read_json(job_dir / "metrics.json")
        job.metrics = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        job.kinds = {
            k: v for k, v in (metrics or {}).items() if k in ("monitor", "higher_is_better")
        }
        job.pruned_at_epoch = job.metrics.get("pruned_at_epoch")
    elif (job_dir / FAILED).is_file():
        details, problem = read_json(job_dir / FAILED)
        job.error = str(details.get("error")) if details else "failed"
    else:
        problem, job.error = None, "no metrics.json (still running, or killed)"
    job.unreadable += [problem] if problem else []
    return job


def read_jobs(sweep_dir: Path) -> list[Job]:
    if not sweep_dir.is_dir():
        raise UserError(
            f"{sweep_dir} is not a folder; pass a sweep's folder, outputs/multirun/<sweep>"
        )
    job_dirs = [
        d
        for d in sweep_dir.iterdir()
        if (d / ".hydra" / "overrides.yaml").is_file() or (d / FAILED).is_file()
    ]
    if not job_dirs:
        raise UserError(
            f"{sweep_dir} holds no sweep jobs (folders with .hydra/overrides.yaml); pass "
            f"outputs/multirun/<sweep>"
        )
    return [read_job(job_dir) for job_dir in sorted(job_dirs, key=lambda d: natural(d.name))]


def natural(name: str) -> tuple:
    """Job folders in their order: by the number they start with (2_optimizer.lr=0.1)."""
    number = name.split("_", 1)[0]
    return (0, int(number), name) if number.isdigit() else (1, 0, name)


def choose_metric(jobs: list[Job], metric: str | None, mode: str | None) -> tuple[str, str]:
    """The metric to sort by (by default, the one that picked each run's best checkpoint) and
    its direction, as the runs' metrics.json declare them (`monitor`, `higher_is_better`)."""
    available = sorted({name for job in jobs for name in job.metrics})
    declared = next((job.kinds for job in jobs if job.kinds), {})
    metric = metric or declared.get("monitor")
    if metric is None:
        raise UserError(
            "no job says which metric it monitors; choose --metric from: "
            f"{', '.join(available) or 'none'}"
        )
    if metric not in available:
        raise UserError(
            f"metric {metric!r} is in no job's metrics.json; available: {', '.join(available)}"
        )
    higher_is_better = declared.get("higher_is_better", {}).get(
        metric.rsplit("/", 1)[-1]
    )  # val/acc → acc
    if mode is None and higher_is_better is None:
        raise UserError(
            f"the runs do not say whether a higher {metric} is better; pass --mode max or --mode "
            f"min"
        )
    return metric, mode or ("max" if higher_is_better else "min")


def report(sweep_dir: str | Path, metric: str | None = None, mode: str | None = None) -> str:
    """Write report.md, report.csv and report.png into the sweep folder; return the Markdown."""
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
        from dlcourse.search import optuna_views

        markdown += optuna_views(sweep_dir)
    (sweep_dir / "report.md").write_text(markdown)
    with open(sweep_dir / "report.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["job", *swept, metric, "error"])
        for job in jobs:
            settings = [job.overrides.get(key, "") for key in swept]
            writer.writerow([job.name, *settings, job.metrics.get(metric, ""), job.error or ""])
    plot(done, swept, metric, sweep_dir / "report.png")
    return markdown


def markdown_report(
    name: str, jobs: list[Job], done: list[Job], swept: list[str], metric: str, mode: str
) -> str:
    """The table of finished jobs, best first (★), then the jobs it could not rank, and why."""
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
    title = f"# Sweep {name}: {counts}{len(failed)} failed; sorted by {metric} ({mode})"
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += section(
        "Pruned jobs (stopped early by the search's pruner; checkpoints and logs kept)",
        [
            f"{describe(job)}: after epoch {job.pruned_at_epoch:g}, {metric}="
            f"{job.metrics.get(metric, math.nan):.4f}"
            for job in pruned
        ],
    )
    lines += section("Failed jobs", [f"{describe(job)}: {job.error}" for job in failed])
    missing = [
        f"{describe(job)}: {metric}={job.metrics.get(metric, 'missing')}" for job in no_value
    ]
    lines += section(f"Jobs without a finite {metric}", missing)
    unreadable = [f"job {job.name}: {problem}" for job in jobs for problem in job.unreadable]
    lines += section("Files that could not be read", unreadable)
    return "\n".join(lines) + "\n"


def describe(job: Job) -> str:
    return f"job {job.name} ({', '.join(f'{k}={v}' for k, v in job.overrides.items())})"


def section(title: str, items: list[str]) -> list[str]:
    return ["", f"## {title}", "", *(f"- {item}" for item in items)] if items else []


def plot(jobs: list[Job], swept: list[str], metric: str, path: Path) -> None:
    """The metric against each swept hyperparameter, one panel each."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, max(len(swept), 1), figsize=(4 * max(len(swept), 1), 3.2), squeeze=False
    )
    for axis, key in zip(axes[0], swept):
        values = [job.overrides.get(key, "") for job in jobs]
        numeric = all(is_number(value) for value in values)
        xs = [float(v) for v in values] if numeric else values
        axis.scatter(xs, [job.metrics[metric] for job in jobs])
        if (
            numeric
            and len({x for x in xs if x > 0}) > 2
            and min(xs) > 0
            and max(xs) / min(xs) >= 100
        ):
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel(metric)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
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
