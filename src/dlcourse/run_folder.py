"""A run's folder: claimed before anything is written into it, then what the run writes there
besides TensorBoard events (with a no-op twin for the ranks of a distributed run other than 0).

    with RunFolder(run_dir, resuming=False) as folder:   # dlcourse-train, around every run
        folder.record(cfg, hydra_cfg)

Claiming checks that a new run does not land in a folder that holds another run, and takes a
lock (`.lock`, holding the owner's process id) so that two processes never write one folder;
a lock whose process is gone (killed with -9, or the earlier attempt of a requeued cluster
job) is stale and taken over. Only then are the run's record (`.hydra/`; a resume adds
`.hydra/resume-N/` and keeps the original) and its log (`train.log`) written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dlcourse.checkpoint import export_safetensors, save_checkpoint
from dlcourse.errors import SweepError, UserError, write_text
from dlcourse.pictures import save_png

LOCK = ".lock"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's own


class FolderInUse(SweepError):
    """Another run owns the folder. A sweep that meets one stops: its folder is being reused."""


class RunFolder:
    def __init__(self, path: str | Path, resuming: bool) -> None:
        self.path = Path(path)
        self.resuming = resuming
        self.lock = self.path / LOCK
        self.log_handler: logging.Handler | None = None

    def __enter__(self) -> RunFolder:
        if not self.resuming and any(
            (self.path / name).exists() for name in ("checkpoints", "metrics.json")
        ):
            raise FolderInUse(
                f"{self.path} already holds a run; continue it with dlcourse-train "
                f"resume={self.path}, or give this run another folder"
            )
        self.take_lock()
        self.log_handler = RunLog(self.path / "train.log")
        self.log_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(self.log_handler)
        return self

    def __exit__(self, exc_type: type | None, error: BaseException | None, traceback: Any) -> None:
        if self.log_handler:
            if isinstance(error, Exception):  # the log says how the run ended, as the console did
                text = (
                    str(error)
                    if isinstance(error, UserError)
                    else f"{type(error).__name__}: {error}"
                )
                self.log_handler.handle(
                    logging.makeLogRecord(
                        {
                            "name": "dlcourse.train",
                            "levelno": logging.ERROR,
                            "levelname": "ERROR",
                            "msg": f"error: {text}",
                        }
                    )
                )
            logging.getLogger().removeHandler(self.log_handler)
            self.log_handler.close()
        self.lock.unlink(missing_ok=True)

    def take_lock(self) -> None:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
        }
        for _ in range(2):  # a second try after removing a stale lock
            try:
                descriptor = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.lock)
                if holder is not None and not is_stale(holder, me):
                    raise FolderInUse(
                        f"{self.path} is in use by process {holder.get('pid')} on "
                        f"{holder.get('host')}; wait for it to finish (if that process is gone, "
                        f"delete {self.lock})"
                    ) from None
                self.lock.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as file:
                json.dump(me, file)
            return
        raise FolderInUse(
            f"{self.path}: another process took its lock at the same moment; try again"
        )

    def record(self, cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> None:
        """The composed config and the command line's overrides, as Hydra would write them: in
        `.hydra/` for a new run; in `.hydra/resume-N/` for the N-th resume, the original kept."""
        folder = self.path / ".hydra"
        if self.resuming:
            number = 1 + sum(1 for p in folder.glob("resume-*")) if folder.is_dir() else 1
            folder = folder / f"resume-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, folder / "config.yaml")
        if hydra_cfg is not None:
            OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), folder / "hydra.yaml")
            OmegaConf.save(hydra_cfg.overrides.task, folder / "overrides.yaml")


class RunLog(logging.FileHandler):
    """train.log. A write it cannot make (a full disk) is skipped quietly rather than printing a
    traceback for every log line: the run itself reports the full disk, once."""

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


def read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's holder, or None when the lock is unreadable (half-written: stale)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def is_stale(holder: dict[str, Any], me: dict[str, Any]) -> bool:
    """A lock is stale when its process is gone: on this machine, no process has its id; on a
    cluster, this process is a later attempt of the same (requeued) job."""
    if me["slurm_job"] and holder.get("slurm_job") == me["slurm_job"]:
        return True
    if holder.get("host") != me["host"] or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False  # alive (this very process included: one folder, one claim)


class RunFiles:
    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"

    def save_checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        save_checkpoint(checkpoint, self.checkpoint_dir / name)

    def save_image(self, name: str, image: torch.Tensor) -> None:
        save_png(image, self.output_dir / f"{name}.png")

    def write_results(
        self, metrics: dict[str, float], model: nn.Module, model_config: dict[str, Any]
    ) -> None:
        """metrics.json, and the weights as model.safetensors (no pickle; config in metadata)."""
        export_safetensors(model, model_config, self.output_dir / "model.safetensors")
        write_text(self.output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")


class NullRunFiles(RunFiles):
    """Writes nothing (ranks other than 0 share rank 0's folder but leave it to rank 0)."""

    def save_checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        pass

    def save_image(self, name: str, image: torch.Tensor) -> None:
        pass

    def write_results(
        self, metrics: dict[str, float], model: nn.Module, model_config: dict[str, Any]
    ) -> None:
        pass
