"""What a sweep's job folders hold, read as data: each job's overrides (.hydra/overrides.yaml),
and its metrics.json or, when it failed, its failed.json. A folder handed to you may hold
anything in their place (half a file, a link to /dev/zero, a FIFO, a 5000-deep YAML list): each
reader returns what it could read and says what it could not, so one odd job never costs a
report (dlcourse-sweep-report, dlcourse-runs) its other jobs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcourse.infrastructure.errors import UserError, clean
from dlcourse.infrastructure.files import as_number, read_json, read_small
from dlcourse.infrastructure.run_folder import FAILED, METRICS, OVERRIDES, RECORD


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
    # A seed group's (dlcourse/sweeps/seeds.py): each metric's std, low, high (95 % interval) and n.
    spread: dict[str, dict[str, float]] = field(default_factory=dict)


def read_overrides(job_dir: Path) -> tuple[list[str], str | None]:
    """The job's overrides from .hydra/overrides.yaml (else its failed.json), or why not."""
    import yaml  # comes with hydra / omegaconf

    path = job_dir / RECORD / OVERRIDES
    if not os.path.lexists(path):
        details, _ = read_json(job_dir / FAILED)
        return [str(o) for o in (details or {}).get("overrides") or []], None
    try:  # safe_load: plain data only (a !!python/object tag is an error, never run)
        overrides = yaml.safe_load(read_small(path))
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as error:
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
    # lexists: a folder, a link or a device in a record's place is listed as unreadable.
    if os.path.lexists(job_dir / METRICS):
        values, problem = read_json(job_dir / METRICS)
        job.metrics, job.kinds, odd = read_metrics(values or {})
        job.spread = read_spread(values or {})
        job.unreadable += odd
        job.pruned_at_epoch = job.metrics.get("pruned_at_epoch")
    elif os.path.lexists(job_dir / FAILED):
        details, problem = read_json(job_dir / FAILED)
        job.error = str(details.get("error")) if details else "failed"
    else:
        problem, job.error = None, "no metrics.json (still running, or killed)"
    job.unreadable += [problem] if problem else []
    return job


def read_metrics(values: dict) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """metrics.json's numbers, its `monitor` and `higher_is_better` when they have the right
    types, and what was odd: a metric that is text, a list or an integer too large for a float
    is listed, not compared. (Other entries, such as class_names, are not metrics.)"""
    metrics, odd = {}, []
    for name, value in values.items():
        number = as_number(value)
        if number is not None:
            metrics[name] = number
        elif "/" in name or (isinstance(value, int) and not isinstance(value, bool)):
            odd.append(f"metrics.json: {clean(name)[:80]} is not a number ({preview(value)})")
    kinds: dict[str, Any] = {}
    monitor, higher = values.get("monitor"), values.get("higher_is_better")
    if isinstance(monitor, str):
        kinds["monitor"] = monitor
    elif monitor is not None:
        odd.append(f"metrics.json: monitor is not a metric's name ({preview(monitor)})")
    if isinstance(higher, dict) and all(isinstance(v, bool) for v in higher.values()):
        kinds["higher_is_better"] = higher
    elif higher is not None:
        odd.append(f"metrics.json: higher_is_better is not names → true/false ({preview(higher)})")
    return metrics, kinds, odd


def read_spread(values: dict) -> dict[str, dict[str, float]]:
    """A seed group's spread of each metric over its seeds, where its numbers are numbers."""
    group = values.get("seeds")
    spread = group.get("spread") if isinstance(group, dict) else None
    if not isinstance(spread, dict):
        return {}
    read = {}
    for name, entry in spread.items():
        if not isinstance(entry, dict):
            continue
        numbers = {key: as_number(entry.get(key)) for key in ("std", "low", "high", "n")}
        if all(number is not None for number in numbers.values()):
            read[str(name)] = numbers
    return read


def preview(value: Any, limit: int = 40) -> str:
    text = clean(value)
    return text if len(text) <= limit else text[:limit] + "…"


def read_jobs(sweep_dir: Path) -> list[Job]:
    if not sweep_dir.is_dir():
        raise UserError(
            f"{sweep_dir} is not a folder; pass a sweep's folder, outputs/multirun/<sweep>"
        )
    try:
        entries = sorted(sweep_dir.iterdir(), key=lambda d: natural(d.name))
    except OSError as error:
        raise UserError(
            f"cannot read {sweep_dir}: {error.strerror}; pass a folder you can read"
        ) from None
    jobs = [job for entry in entries if (job := read_entry(entry)) is not None]
    if not jobs:
        raise UserError(
            f"{sweep_dir} holds no sweep jobs (folders with .hydra/overrides.yaml); pass "
            f"outputs/multirun/<sweep>"
        )
    return jobs


def read_entry(entry: Path) -> Job | None:
    """The job in one entry of the sweep folder (None: it is no job's folder). A folder that
    cannot be read is listed as such: one odd folder never costs the report its other jobs."""
    try:
        if os.path.lexists(entry / RECORD / OVERRIDES) or os.path.lexists(entry / FAILED):
            return read_job(entry)
        return None
    except Exception as error:  # a folder handed to us may be odd in ways no reader foresaw
        return Job(
            entry.name, unreadable=[f"its folder could not be read ({describe_error(error)})"]
        )


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {preview(error, 80)}"


def natural(name: str) -> tuple:
    """Job folders in their order: by the number they start with (2_optimizer.lr=0.1). Only
    ASCII digits count (`²`.isdigit() is true, but int('²') fails)."""
    number = name.split("_", 1)[0]
    return (0, int(number), name) if number.isascii() and number.isdigit() else (1, 0, name)
