"""Optuna searches: the study's storage (optuna.journal, repaired before a search continues it),
its sampler and pruner, and the job's side: the trial a job reports to.

    dlcourse-train hparams_search=mnist_optuna hydra/sweeper/pruner=median

The sweeper itself is src/hydra_plugins/dlcourse_optuna_sweeper.py. A job of a search reports
its validation metric to its trial after every evaluation, through the study's storage in the
sweep folder, so pruning works whatever process runs the job (joblib workers, SLURM); when the
pruner says so the trainer stops like an early stop, and the sweeper records the trial as pruned.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dlcourse.infrastructure.errors import SweepError
from dlcourse.infrastructure.files import write_file
from dlcourse.infrastructure.run_folder import JOURNAL

log = logging.getLogger(__name__)

# The only modules whose classes a sweeper config may name (hydra.sweeper.sampler / pruner).
SAMPLERS, PRUNERS = "optuna.samplers.", "optuna.pruners."


@dataclass
class Pruned:
    """What a pruned job returns to the sweeper (instead of its metric): where it stopped."""

    epoch: int
    value: float | None


def open_storage(storage: str | None, sweep_dir: str | Path) -> Any:
    """None: a new study in memory (the official sweeper's default); `journal`: optuna.journal
    in the sweep folder, safe for jobs in other processes on a shared file system; `sqlite`:
    optuna.db there; else an Optuna storage URL as it is."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if storage == "journal":
        return JournalStorage(JournalFileBackend(str(Path(sweep_dir) / JOURNAL)))
    if storage == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{Path(sweep_dir).resolve()}/optuna.db")
    return storage


def directions_of(direction: Any) -> list[str]:
    """`minimize`, `maximize`, or a list of them (one per objective), as Optuna takes them."""
    directions = OmegaConf.to_container(direction) if OmegaConf.is_config(direction) else direction
    directions = directions if isinstance(directions, (list, tuple)) else [directions]
    names = [str(getattr(d, "name", d)).lower() for d in directions]  # the official enum, too
    if not names or any(name not in ("minimize", "maximize") for name in names):
        raise SweepError(
            f"hydra.sweeper.direction={direction}: give minimize, maximize or a list of them "
            f"(one per objective, e.g. [minimize, maximize])"
        )
    return names


def repair_journal(path: Path) -> None:
    """Make a study's journal whole before a search continues it (the searcher holds the sweep
    folder's lock; Optuna's own file lock keeps out jobs that write to it meanwhile).

    A kill or a full disk in the middle of a write leaves a last line without its end: Optuna
    skips it, but the next write would be appended onto it and break the study for good. Such a
    line is cut away (kept in optuna.journal.torn-<time>); a last line that is whole JSON only
    gets its missing line end. A damaged line before the last is refused in one line."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file():
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        body, tail = data[: data.rfind(b"\n") + 1], data[data.rfind(b"\n") + 1 :]
        damage = journal_damage(body)
        if damage is not None:
            raise SweepError(
                f"{path} is damaged at {damage}, so its study cannot be read; move it aside (mv "
                f"{path} {path}.damaged) to start the study anew (the job folders keep their "
                f"results), or put back a copy you saved"
            )
        if tail and journal_record(tail) is not None:
            with open(path, "ab") as file:
                file.write(b"\n")
        elif tail:
            cut_torn_tail(path, len(body), tail)
    finally:
        lock.release()


def journal_damage(body: bytes) -> str | None:
    """Where the first line of these whole journal lines that is not an Optuna record is
    (`line 3 of 40 (not JSON)`), or None."""
    lines = body.split(b"\n")[:-1]
    for number, line in enumerate(lines, 1):
        if journal_record(line) is None:
            return f"line {number} of {len(lines)} (not an Optuna journal record)"
    return None


def journal_record(line: bytes) -> dict | None:
    """One journal line as Optuna writes it: a JSON object with an `op_code`; else None."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested thousands deep
        return None
    if isinstance(record, dict) and isinstance(record.get("op_code"), int):
        return record
    return None


def cut_torn_tail(path: Path, keep: int, tail: bytes) -> None:
    """Keep what the torn last line held in a file beside the journal, then cut it away."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    copy = path.with_name(f"{path.name}.torn-{stamp}")
    for number in range(2, 100):  # two repairs in one second keep both copies
        if not copy.exists():
            break
        copy = path.with_name(f"{path.name}.torn-{stamp}-{number}")
    write_file(copy, tail, root=path.parent)
    os.truncate(path, keep)
    log.warning(
        "%s ended in a line cut short (%d bytes: a write stopped by a kill or a full disk); cut "
        "it away, kept in %s",
        path,
        len(tail),
        copy.name,
    )


def build_pruner(config: Any) -> Any:
    """The pruner a config names; None (no `_target_`): Optuna's NopPruner, which never prunes."""
    import optuna

    config = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
    if not config or not config.get("_target_"):
        return optuna.pruners.NopPruner()
    return build_from(config, PRUNERS)


def build_from(config: dict, module: str) -> Any:
    """An Optuna sampler or pruner from its config, refusing any class outside `module`."""
    target = str(config.get("_target_"))
    if not target.startswith(module):
        raise SweepError(f"_target_: {target} is not one of Optuna's {module}* classes")
    return instantiate(config, _convert_="all")


class Trial:
    """The job's side: report the monitored metric after each evaluation; True: stop (pruned)."""

    def __init__(self, study: Any, trial_id: int, metric: str) -> None:
        import optuna

        self.trial = optuna.trial.Trial(study, trial_id)
        self.metric = metric

    def should_prune(self, epoch: int, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        self.trial.report(float(value), epoch)
        return self.trial.should_prune()


def job_trial(hydra_cfg: DictConfig, metric: Any) -> Trial | None:
    """This job's trial when an Optuna search launched it (its job number is its trial number);
    None: a sweep without pruning, a study other processes cannot reach (storage: null), one
    of several objectives, or a trial the study lacks."""
    sweeper = hydra_cfg.sweeper
    if not str(sweeper.get("_target_", "")).endswith("DlcourseOptunaSweeper") or not metric:
        return None
    if sweeper.storage is None or not isinstance(metric, str):
        if (sweeper.pruner or {}).get("_target_"):
            log.warning(
                "No pruning: it needs one objective and a study the jobs can reach "
                "(hydra.sweeper.storage=journal)."
            )
        return None
    import optuna

    study = optuna.load_study(
        study_name=sweeper.study_name,
        storage=open_storage(sweeper.storage, hydra_cfg.sweep.dir),
        pruner=build_pruner(sweeper.pruner),
    )
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == hydra_cfg.job.num]
    if not trials:
        log.warning("Trial %d is not in study %s: no pruning.", hydra_cfg.job.num, study.study_name)
        return None
    return Trial(study, trials[0]._trial_id, metric)
