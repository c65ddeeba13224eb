"""A run's folder: the name of every file dlcourse writes in a run or sweep folder, the run's
record read back, and the claim taken before anything is written into a run folder.

    train(cfg, run_dir, folder=RunFolder(run_dir, resuming, cfg, hydra_cfg))   # dlcourse-train

Claiming checks that a new run lands in a new or empty folder (or the leavings of its own
earlier attempt, which never saved: a requeued cluster job's), never in another run's or the
user's own files; that the folder holds no symbolic link (dlcourse writes nothing through one:
dlcourse/infrastructure/files.py); and takes a lock (`.lock`, holding the owner's process id
and start time) so that two processes never write one folder; a lock whose process is gone
(killed with -9, or the earlier attempt of a requeued cluster job) is stale and taken over.
Only then are the run's record (`.hydra/`; a resume adds `.hydra/resume-N/` and keeps the
original) and its log (`train.log`) written. What the run then writes there is run_files.py's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from dlcourse.infrastructure import locks
from dlcourse.infrastructure.errors import SweepError, TrainingInterrupted, UserError
from dlcourse.infrastructure.files import (
    read_json,
    read_small,
    refuse_link,
    refuse_links_inside,
    write_file,
)

# Every name dlcourse gives a file or folder in a run or sweep folder: defined here, and only here.
CHECKPOINTS = "checkpoints"  # a run's checkpoints/ folder, holding:
LAST, BEST = "last.pt", "best.pt"  # where the run is (resume= continues it), and its best epoch
METRICS = "metrics.json"  # a finished run's results, beside its checkpoints/
WEIGHTS = "model.safetensors"  # the tested weights alone, without pickle
RECORD = ".hydra"  # the run's config and command line, as Hydra writes them
OVERRIDES, HYDRA = "overrides.yaml", "hydra.yaml"  # in RECORD: its command line, its settings
LOG = "train.log"
LOCK = ".lock"  # held by the process writing the folder (dlcourse.infrastructure.locks)
FAILED = "failed.json"  # a failed sweep job's record, in place of its metrics.json
JOURNAL = "optuna.journal"  # an Optuna search's study, in its sweep folder
STOP_MARKER = ".stopping"  # in a sweep's folder while it stops: jobs that start then do not run
LR_FIND = (
    "lr_find.json"  # a learning-rate finder's folder (dlcourse-lr-find): its curve, suggestion
)
SEEDS = "seeds.json"  # in a seed group's folder (dlcourse/sweeps/seeds.py): its seeds, one run each
CONFIG = "config.yaml"  # in RECORD: the composed config (its `tags`, for dlcourse-runs)
METRICS_CSV = "metrics.csv"  # logger=csv: the run's metrics, a row per logged step
MLFLOW_RUN = "mlflow.json"  # logger=mlflow: the MLflow run this run folder writes to
MLFLOW_STORE, MLFLOW_ARTIFACTS = "mlflow.db", "mlartifacts"  # logger=mlflow's, in the outputs
PROFILE = "profile"  # trainer.profile_steps: torch.profiler's trace of some training steps

# What a run that never saved leaves in its folder (besides its pictures): a folder holding
# only these may take a new attempt of that run, as a requeued cluster job or a rerun sweep is.
LEAVINGS = (RECORD, LOG, FAILED, LOCK, METRICS_CSV, MLFLOW_RUN)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's own


class FolderInUse(SweepError):
    """Another run owns the folder. A sweep that meets one stops: its folder is being reused."""


class RunFolder:
    """Claimed on entering (once the run's config is checked: `dlcourse.run.train` enters it),
    with the run's record written; the lock let go on leaving, the log saying how it ended."""

    def __init__(
        self,
        path: str | Path,
        resuming: bool,
        cfg: DictConfig | None = None,
        hydra_cfg: DictConfig | None = None,
    ) -> None:
        self.path = Path(path)
        self.resuming = resuming
        self.cfg, self.hydra_cfg = cfg, hydra_cfg
        self.lock = self.path / LOCK
        self.log_handler: logging.Handler | None = None

    def __enter__(self) -> RunFolder:
        if not self.resuming:
            check_free(self.path)
        refuse_links_inside(self.path, "the run folder")
        self.take_lock()
        self.log_handler = RunLog(self.path / LOG)
        self.log_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(self.log_handler)
        if self.cfg is not None:
            try:
                self.record(self.cfg, self.hydra_cfg)
            except BaseException as error:  # let go of the folder, and log why, as any end does
                self.__exit__(type(error), error, error.__traceback__)
                raise
        return self

    def __exit__(self, exc_type: type | None, error: BaseException | None, traceback: Any) -> None:
        if self.log_handler:
            if isinstance(error, Exception):  # the log says how the run ended, as the console did
                self.log_handler.handle(ending_record(error))
            logging.getLogger().removeHandler(self.log_handler)
            self.log_handler.close()
        self.lock.unlink(missing_ok=True)

    def take_lock(self) -> None:
        me = locks.this_process()
        for _ in range(2):  # a second try after removing a stale lock
            if locks.create(self.lock, me):
                return
            if locks.is_held(self.lock, me):
                holder = locks.read(self.lock) or {}
                raise FolderInUse(
                    f"{self.path} is in use by process {holder.get('pid', '(being written)')} on "
                    f"{holder.get('host', 'this host')}; wait for it to finish (if that process "
                    f"is gone, delete {self.lock})"
                )
            self.lock.unlink(missing_ok=True)
        raise FolderInUse(
            f"{self.path}: another process took its lock at the same moment; try again"
        )

    def record(self, cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> None:
        """The composed config and the command line's overrides, as Hydra would write them: in
        `.hydra/` for a new run; in `.hydra/resume-N/` for the N-th resume, the original kept."""
        folder = self.path / RECORD
        if self.resuming:
            number = 1 + sum(1 for p in folder.glob("resume-*")) if folder.is_dir() else 1
            folder = folder / f"resume-{number}"
        records = {"config.yaml": cfg}
        if hydra_cfg is not None:
            records[HYDRA] = OmegaConf.create({"hydra": hydra_cfg})
            records[OVERRIDES] = hydra_cfg.overrides.task
        for name, record in records.items():
            write_file(folder / name, OmegaConf.to_yaml(record), root=self.path)


def ending_record(error: Exception) -> logging.LogRecord:
    """train.log's last line for a run that did not finish: stopped by a signal (a warning: it
    resumes), or failed, with the message the console showed (dlcourse-runs reads it back)."""
    if isinstance(error, TrainingInterrupted):
        level, text = logging.WARNING, f"stopped: {error}"
    elif isinstance(error, UserError):
        level, text = logging.ERROR, f"error: {error}"
    else:
        level, text = logging.ERROR, f"error: {type(error).__name__}: {error}"
    name = logging.getLevelName(level)
    return logging.makeLogRecord(
        {"name": "dlcourse.train", "levelno": level, "levelname": name, "msg": text}
    )


def check_free(path: Path) -> None:
    """A new run writes only into a folder it may call its own: new, empty, or what an earlier
    attempt of it left before it saved anything. Never another run's, never the user's files."""
    held = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if CHECKPOINTS in held or METRICS in held:
        raise FolderInUse(
            f"{path} already holds a run; continue it with dlcourse-train resume={path}, or give "
            f"this run another folder"
        )
    leavings = RECORD in held and all(is_leaving(path / name) for name in held)
    if held and not leavings:
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise UserError(
            f"{path} holds files that are not this run's ({shown}); a new run writes only into a "
            f"new or empty folder. Choose another hydra.run.dir (or leave it out: each run gets "
            f"a new folder)"
        )


def is_leaving(path: Path) -> bool:
    """What an attempt leaves before its first checkpoint: its record, log and lock, pictures,
    TensorBoard's events, and sub-runs of events (`train/`, `val/`: see loggers.placement)."""
    if path.is_dir() and not path.is_symlink() and path.name != RECORD:  # sub-runs, a profile
        return all(
            (is_events(item) or item.name.endswith(".pt.trace.json")) and not item.is_dir()
            for item in path.iterdir()
        )
    return path.name in LEAVINGS or path.name.endswith(".png") or is_events(path)


def is_events(path: Path) -> bool:
    return path.name.startswith("events.out.tfevents.")


class RunLog(logging.FileHandler):
    """train.log, appended to, never through a link. A write it cannot make (a full disk) is
    skipped quietly rather than printing a traceback for every log line: the run itself reports
    the full disk, once."""

    def _open(self):
        refuse_link(Path(self.baseFilename))
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        return os.fdopen(os.open(self.baseFilename, flags, 0o666), "a", encoding=self.encoding)

    def handleError(self, record: logging.LogRecord) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handleError(record)


class NullRunFolder(RunFolder):
    """The twin for ranks other than 0 of a distributed run: rank 0 owns the folder."""

    def __init__(self) -> None:
        pass

    def __enter__(self) -> NullRunFolder:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        pass

    def record(self, cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> None:
        pass


def discard_if_empty(path: Path) -> None:
    """Remove a folder that nothing was written into (a refused run's, a rank's scratch one)."""
    with contextlib.suppress(OSError):  # not empty, or not there: keep it
        path.rmdir()


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


def owning_run(path: Path) -> Path | None:
    """The run folder that `path` lies in (a folder with checkpoints/ and .hydra/), or None."""
    for folder in Path(os.path.abspath(path)).parents:
        if (folder / CHECKPOINTS).is_dir() and (folder / RECORD).is_dir():
            return folder
    return None


def check_output(
    output: Path, inputs: list[Path], own_run: Path | None, key: str, writes: str = ".json"
) -> None:
    """An output path (`key`=...) may not be one of the command's inputs or inside one, a
    checkpoint (but for a new file of the kind the command `writes`: dlcourse-export's
    .safetensors), a run's own weights, or in a run folder other than `own_run` (the run the
    command reads)."""
    resolved = output.resolve()
    if resolved.is_dir():
        raise UserError(f"{key}={output} is a folder; name a file, e.g. {output / 'test.json'}")
    for source in inputs:
        source = source.resolve()
        if resolved == source or source in resolved.parents:
            raise UserError(
                f"{key}={output} would write over {source}, which this command reads; name a "
                f"new file"
            )
    if resolved.name == WEIGHTS and resolved.exists():
        raise UserError(f"{key}={output} is a run's own weights; name a new file")
    if resolved.suffix in CHECKPOINT_SUFFIXES and resolved.suffix != writes:
        raise UserError(
            f"{key}={output} names a checkpoint file; results go to a new {writes} file"
        )
    run = owning_run(resolved)
    if run is not None and run != (own_run.resolve() if own_run else None):
        raise UserError(
            f"{key}={output} lies inside another run's folder ({run}); write it outside runs, or "
            f"leave {key} out (the results go beside the checkpoint)"
        )
    if resolved.exists() and not resolved.is_file():
        raise UserError(f"{key}={output} is not a regular file; name a new .json file")


def read_record(folder: Path) -> tuple[dict, list[str]]:
    """The config-group choices and command-line overrides a run started with, from the record
    its first start wrote (.hydra/hydra.yaml, read as plain YAML); none if it is unreadable."""
    try:  # ValueError: not UTF-8; RecursionError: nested thousands deep
        hydra = yaml.safe_load(read_small(folder / RECORD / HYDRA))["hydra"]
        choices = hydra["runtime"]["choices"] or {}
        # Strings only: str() of YAML aliases nested in each other grows exponentially.
        overrides = [o for o in hydra["overrides"]["task"] or [] if isinstance(o, str)]
    except (OSError, ValueError, RecursionError, yaml.YAMLError, KeyError, TypeError):
        return {}, []
    return (choices if isinstance(choices, dict) else {}), overrides


def read_tags(folder: Path) -> list[str]:
    """The `tags=[...]` a run was started with, from its record's config (read as plain YAML,
    as data); none if it has none or it is unreadable."""
    try:
        config = yaml.safe_load(read_small(folder / RECORD / CONFIG))
        tags = config.get("tags") if isinstance(config, dict) else None
    except (OSError, ValueError, RecursionError, yaml.YAMLError):
        return []
    return (
        [str(tag) for tag in tags if isinstance(tag, (str, int, float))]
        if isinstance(tags, list)
        else []
    )


def member_folder(group: Path, seed: int) -> Path:
    """The run folder of one seed of a seed group: `<group>/seed=42`."""
    return group / f"seed={seed}"


def group_seeds(folder: str | Path | None) -> list[int] | None:
    """The seeds of the seed group in `folder` (its seeds.json, read as data), or None when
    `folder` is no seed group's."""
    if not folder or not (Path(folder) / SEEDS).is_file():
        return None
    values, problem = read_json(Path(folder) / SEEDS)
    seeds = (values or {}).get("seeds")
    if problem or not isinstance(seeds, list) or not seeds:
        raise UserError(f"{Path(folder) / SEEDS} is not a seed group's list of seeds: {problem}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in seeds):
        raise UserError(f"{Path(folder) / SEEDS}: its seeds are not all integers of 0 or more")
    return seeds


def shortest_path(path: Path) -> str:
    """`path` relative to the current folder when it lies inside it (what a user would type)."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)
