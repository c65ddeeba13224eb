"""A search's study across runs of the same command: the sweep folder's lock (one search at a
time), telling Optuna how each job ended, settling the trials a killed search left running
(adopted, resumed or replaced), and optimization_results.yaml. The sweeper that uses them is
src/hydra_plugins/dlcourse_optuna_sweeper.py; Optuna is imported only where a search needs it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dlcourse.infrastructure import locks
from dlcourse.infrastructure.errors import SweepError
from dlcourse.infrastructure.files import as_number, read_json, write_file
from dlcourse.infrastructure.run_folder import CHECKPOINTS, FAILED, LAST, LOCK, METRICS
from dlcourse.sweeps.search import Pruned

log = logging.getLogger(__name__)


def tell(study: Any, trial: Any, job: Any, objectives: int = 1) -> str | None:
    """Record one job's outcome in the study; what failed, in words (None: it did not fail).
    As the official sweeper: a job that raised, or returned what is not a number (or not one per
    objective), fails its trial and the search goes on (up to max_failure_rate)."""
    from optuna.trial import TrialState

    try:
        value = job.return_value
    except Exception as error:  # the job raised: Hydra keeps the error for us
        return failed(study, trial, f"{type(error).__name__}: {error}")
    if isinstance(value, Pruned):
        record(study, trial, state=TrialState.PRUNED)
        log.info("Trial %d pruned after epoch %d.", trial.number, value.epoch)
        return None
    record_file = failure_record(job)
    if value is None and record_file is not None:  # a dlcourse job that recorded its failure
        return failed(study, trial, f"see {record_file}")
    try:
        values = objective_values(value, objectives)
    except ValueError as error:
        return failed(study, trial, str(error))
    if not all(math.isfinite(v) for v in values):
        return failed(study, trial, f"its job returned {value}")
    record(study, trial, values=values if objectives > 1 else values[0])
    return None


def failed(study: Any, trial: Any, why: str) -> str:
    from optuna.trial import TrialState

    record(study, trial, state=TrialState.FAIL)
    log.warning("Trial %d failed: %s", trial.number, why)
    return f"trial {trial.number}: {why}"


def objective_values(value: Any, objectives: int) -> list[float]:
    """A job's return value as one number per objective, else ValueError in the official
    sweeper's words."""
    if objectives == 1:
        try:
            return [float(value)]
        except (TypeError, ValueError):
            raise ValueError(f"Return value must be float-castable. Got '{value}'.") from None
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(
            f"Return value must be a list or tuple of float-castable values. Got '{value}'."
        ) from None
    if len(values) != objectives:
        raise ValueError(
            "The number of the values and the number of the objectives are mismatched. "
            f"Expect {objectives}, but actually {len(values)}."
        )
    return values


def failure_record(job: Any) -> Path | None:
    """The failed.json that a dlcourse job left in its folder (other apps leave none)."""
    try:
        folder = Path(job.hydra_cfg.hydra.runtime.output_dir)
    except Exception:  # a job without Hydra's record of its folder
        return None
    return folder / FAILED if (folder / FAILED).is_file() else None


def record(study: Any, trial: Any, **outcome: Any) -> None:
    """study.tell. A grid sampler that has run every point calls study.stop() as it is told the
    last one, which Optuna allows only inside `study.optimize`: the outcome is stored anyway."""
    from optuna.trial import TrialState

    try:
        # A trial already finished (another process told it) is left as it is, not an error.
        told = study.tell(trial, skip_if_finished=True, **outcome)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise
        return
    wanted = outcome.get("state", TrialState.COMPLETE)
    if told.state != wanted:
        log.warning("Trial %d was already %s: left as it is.", told.number, told.state.name)


def count_finished(study: Any) -> int:
    """Trials that count towards n_trials: the finished ones, except those a killed sweep left
    with nothing to continue from (marked interrupted: a rerun replaces them)."""
    return sum(
        1
        for trial in study.get_trials(deepcopy=False)
        if trial.state.is_finished() and not trial.user_attrs.get("interrupted")
    )


def settle_unfinished(study: Any, sweep_dir: Path, metric: Any) -> list:
    """Trials still RUNNING when a search starts were left by one that was killed or stopped
    (the sweep folder's lock keeps out any other). Each is settled from its job folder: its
    metrics.json is adopted (the trial gets its value, or is pruned), failed.json fails it, a
    checkpoint makes it one to resume (returned), and nothing at all marks it interrupted."""
    import optuna
    from optuna.trial import TrialState

    resumable = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial = optuna.trial.Trial(study, frozen._trial_id)
        folder = job_folder(sweep_dir, frozen.number)
        outcome = outcome_of(folder, metric) if folder is not None else None
        if outcome is not None:
            record(study, trial, **outcome)
            log.info("Trial %d had finished (%s): its result is adopted.", trial.number, folder)
        elif folder is not None and (folder / CHECKPOINTS / LAST).is_file():
            wait_until_free(folder)
            resumable.append(trial)
        else:
            trial.set_user_attr("interrupted", True)
            record(study, trial, state=TrialState.FAIL)
    return resumable


def job_folder(sweep_dir: Path, number: int) -> Path | None:
    """Trial `number`'s job folder (`<number>` or `<number>_<settings>`); of several, the one
    that got furthest (results, else a checkpoint)."""
    names = (str(number), f"{number}_")
    candidates = [
        d
        for d in sweep_dir.iterdir()
        if (d.name == names[0] or d.name.startswith(names[1])) and d.is_dir() and not d.is_symlink()
    ]

    def progress(folder: Path) -> tuple[bool, bool]:
        return (folder / METRICS).is_file(), (folder / CHECKPOINTS / LAST).is_file()

    return max(candidates, key=progress, default=None)


def outcome_of(folder: Path, metric: Any) -> dict | None:
    """What a finished job's files say to tell its trial (None: the job did not finish): its
    metric's value (one per objective), pruned, or failed (a failed.json, or results without
    a finite value)."""
    from optuna.trial import TrialState

    if (folder / METRICS).is_file():
        metrics, problem = read_json(folder / METRICS)
        if metrics is not None and "pruned_at_epoch" in metrics:
            return {"state": TrialState.PRUNED}
        names = [metric] if isinstance(metric, str) or metric is None else list(metric)
        values = [as_number((metrics or {}).get(name or "")) for name in names]
        if all(value is not None and math.isfinite(value) for value in values):
            return {"values": values if len(values) > 1 else values[0]}
        log.warning("%s holds no finite %s (%s): its trial failed.", folder, metric, problem)
        return {"state": TrialState.FAIL}
    if (folder / FAILED).is_file():
        return {"state": TrialState.FAIL}
    return None


def wait_until_free(folder: Path, seconds: float = 60.0) -> None:
    """A job of a killed sweep may still be saving its checkpoint (it stops within a step of
    its sweep's death): wait for its folder's lock, then refuse in one line."""
    lock = folder / LOCK
    deadline = time.monotonic() + seconds
    while is_lock_file(lock) and locks.is_held(lock) and time.monotonic() < deadline:
        time.sleep(0.5)
    if is_lock_file(lock) and locks.is_held(lock):
        holder = locks.read(lock) or {}
        raise SweepError(
            f"{folder} is still in use by process {holder.get('pid', '?')} on "
            f"{holder.get('host', 'this host')} (a job of an earlier search?); wait for it to "
            f"end, or end it, then run the search again"
        )


def consecutive(trials: list, most: int) -> Iterator[list]:
    """The trials in batches of at most `most` consecutive numbers (a launch numbers its jobs
    from its first)."""
    batch: list = []
    for trial in sorted(trials, key=lambda t: t.number):
        if batch and (len(batch) == most or trial.number != batch[-1].number + 1):
            yield batch
            batch = []
        batch.append(trial)
    if batch:
        yield batch


@contextlib.contextmanager
def study_lock(sweep_dir: Path) -> Iterator[None]:
    """The sweep folder's lock (.lock: pid, host, the process's start time), held while this
    search runs: a second search of the same study is refused in one line (it would fail the
    first one's running trials). A lock whose process is gone (kill -9) is taken over."""
    path = sweep_dir / LOCK
    if os.path.lexists(path) and not is_lock_file(path):
        raise SweepError(
            f"{path} is not a lock file (a link, a folder or a device); remove it, then run the "
            f"search again"
        )
    me = locks.this_process()
    for _ in range(2):  # a second try after removing a stale lock
        try:
            created = locks.create(path, me)
        except OSError as error:  # a read-only folder, a full disk
            raise SweepError(
                f"cannot write the search's lock {path}: {error.strerror}; run the search where "
                f"you can write (or copy the sweep folder)"
            ) from None
        if created:
            break
        holder = locks.read(path)
        if lock_is_live(path, holder, me):
            holder = holder or {}
            raise SweepError(
                f"{sweep_dir} is in use by another search (process {holder.get('pid', '?')} on "
                f"{holder.get('host', 'this host')}); wait for it to finish, or give this one its "
                f"own hydra.sweep.dir (if that process is gone, delete {path})"
            )
        log.warning("Taking over %s: the search that held it is gone.", path)
        path.unlink(missing_ok=True)
    else:
        raise SweepError(f"{path}: another search took it at the same moment; try again")
    try:
        yield
    finally:
        if (locks.read(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


def is_lock_file(path: Path) -> bool:
    """A plain file (a link or a device planted as a lock is never read: /dev/zero never ends)."""
    return path.is_file() and not path.is_symlink()


def lock_is_live(path: Path, holder: dict | None, me: dict) -> bool:
    """A holder on this host is alive when its pid runs with the same start time (a SLURM job
    id is no proof that it is gone: two searches may share one allocation)."""
    if holder is not None and holder.get("host") == socket.gethostname():
        return locks.holder_alive(holder)
    return locks.is_held(path, me)


def write_results(study: Any, sweep_dir: Path) -> None:
    """optimization_results.yaml, as the official sweeper writes it: the best trial's settings
    and value, or with several objectives the Pareto front (`solutions`); and the counts."""
    from optuna.trial import TrialState

    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    counts = {state.name.lower(): states.count(state) for state in TrialState}
    results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "trials": counts}
    if counts["complete"] and len(study.directions) > 1:
        front = [{"params": t.params, "values": t.values} for t in study.best_trials]
        results["solutions"] = front
        log.info("Pareto front: %d trials (%s).", len(front), [t.number for t in study.best_trials])
    elif counts["complete"]:
        best = study.best_trial
        results |= {"best_trial": best.number, "best_params": best.params, "best_value": best.value}
        log.info("Best trial %d: %s = %s", best.number, best.params, best.value)
    text = OmegaConf.to_yaml(OmegaConf.create(results))
    write_file(sweep_dir / "optimization_results.yaml", text, root=sweep_dir)
