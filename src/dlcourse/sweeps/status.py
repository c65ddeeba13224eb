"""A sweep's status (Hydra multirun): failed jobs are recorded, not fatal; the sweep's process
notes what it varies, collects garbage as usual, and at the end lists the failed jobs.

    dlcourse-train -m model=linear,mlp optimizer.lr=0.01,0.1

Each job's folder holds its overrides (.hydra/overrides.yaml) and either metrics.json or, when
the job failed, failed.json with its error (dlcourse-sweep-report compares them).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dlcourse.infrastructure.config import SWEPT_KEYS
from dlcourse.infrastructure.errors import UserError, clean
from dlcourse.infrastructure.files import read_json, write_file
from dlcourse.infrastructure.interrupt import SWEEP_PROCESS
from dlcourse.infrastructure.run_folder import FAILED, shortest_path
from dlcourse.sweeps.job_folders import Job, read_jobs
from dlcourse.sweeps.report import choose_metric

log = logging.getLogger(__name__)


def record_failure(job_dir: Path, error: BaseException, overrides: list[str] | None = None) -> None:
    """Write the job's error (and its overrides, for a job refused before it wrote its record)
    into its folder, where the sweep status and the report find it."""
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    details = {
        "error": text,
        "type": type(error).__name__,
        "overrides": overrides or [],
        "traceback": "".join(traceback.format_exception(error)),
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
        print(sweep_summary(sweep_dir), file=sys.stderr, flush=True)
        failed = sorted(sweep_dir.glob(f"*/{FAILED}"))
        if failed:
            for path in failed:
                details, problem = read_json(path)
                error = details.get("error") if details else problem
                print(f"job {clean(path.parent.name)} failed: {clean(error)}", file=sys.stderr)
            print(f"{len(failed)} job(s) of the sweep in {sweep_dir} failed", file=sys.stderr)
            sys.exit(1)


def sweep_summary(sweep_dir: Path) -> str:
    """One line at the end of a sweep: how many jobs, the best by the metric their runs
    monitor, how many failed and were pruned, and the command that reports them all."""
    jobs = read_jobs_or_none(sweep_dir)
    try:
        metric, mode = choose_metric(jobs, None, None)
    except UserError:  # no job finished (or none says what it monitors): no best to name
        metric, mode = None, None
    scored = [job for job in jobs if metric in job.metrics]
    best = ""
    if scored:
        top = (max if mode == "max" else min)(scored, key=lambda job: job.metrics[metric])
        best = f"best {clean(top.name)} ({metric}={top.metrics[metric]:.4f}), "
    failed = sum(job.error is not None and job.pruned_at_epoch is None for job in jobs)
    pruned = sum(job.pruned_at_epoch is not None for job in jobs)
    return (
        f"Sweep finished: {len(jobs)} job(s), {best}{failed} failed, {pruned} pruned. "
        f"Compare them: dlcourse-sweep-report {shortest_path(sweep_dir)}"
    )


def read_jobs_or_none(sweep_dir: Path) -> list[Job]:
    try:
        return read_jobs(sweep_dir)
    except UserError:
        return []


def swept_keys(config: Any) -> list[str]:
    """The settings a sweep varies: the command line's sweeps (`optimizer.lr=0.01,0.1`,
    `range(...)`, ...) and a sweeper's own search space (Optuna's `hydra.sweeper.params`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    return keys + [str(key) for key in (config.hydra.sweeper.get("params") or {})]


class SweepCollectsGarbage(Callback):
    """Hydra callback (configs/hydra/default.yaml): a sweep's own process collects garbage as
    usual. dlcourse-train starts without collection (dlcourse.commands.console.train), and a run
    turns it back on once built; but a sweep's process may never build a run itself (its jobs
    can run in joblib workers or on SLURM) while it waits for hours."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        gc.enable()
