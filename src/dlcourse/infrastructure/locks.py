"""A folder's lock (`.lock`): which process holds it, and whether that process is still alive.

A lock is JSON naming its holder: process id, host, the process's start time (so that a pid
the system has since given to another process is not taken for the holder) and the SLURM job.
It is created whole (written to a temporary file, then hard-linked into place), so nobody ever
sees it empty. A lock is a file someone may have handed you: its pid is never signalled unless
it is a process this one started (see `dlcourse.infrastructure.interrupt.ForwardStopToJobs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

# A lock that cannot be read is being written by an older dlcourse (create, then write), or was
# left half-written by a crash: in use while younger than this, stale after.
UNREADABLE_GRACE_SECONDS = 30.0


def this_process() -> dict[str, Any]:
    """What a lock taken by this process says."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": process_start_time(os.getpid()),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
    }


def process_start_time(pid: Any) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat's 22nd field), or
    None: no such process, not a valid pid, or no /proc here."""
    if not is_pid(pid):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def is_pid(pid: Any) -> bool:
    """A pid that names one ordinary process: an int above 1 (0 and -1 would reach groups or
    everyone, 1 is init) and within the system's range."""
    return isinstance(pid, int) and not isinstance(pid, bool) and 1 < pid < 2**31


def create(path: Path, holder: dict[str, Any]) -> bool:
    """Create the lock at `path` holding `holder`, whole; False if one is there already."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(holder, file)
        try:
            os.link(temporary, path)  # fails if anything is at `path`, even a dangling link
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def read(path: Path) -> dict[str, Any] | None:
    """The lock's holder, or None when the lock cannot be read as one."""
    try:
        holder = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError, RecursionError):
        return None
    return holder if isinstance(holder, dict) else None


def is_held(path: Path, me: dict[str, Any] | None = None) -> bool:
    """Whether the lock at `path` belongs to a live process other than a stale earlier attempt
    of this one's SLURM job. A holder on another host is taken to be alive."""
    me = me or this_process()
    holder = read(path)
    if holder is None:
        with contextlib.suppress(OSError):
            return time.time() - path.lstat().st_mtime < UNREADABLE_GRACE_SECONDS
        return False
    if me["slurm_job"] and holder.get("slurm_job") == me["slurm_job"]:
        return False  # a requeued job's earlier attempt
    if holder.get("host") != me["host"]:
        return True
    return holder_alive(holder)


def holder_alive(holder: dict[str, Any]) -> bool:
    """The process the lock names runs on this host, and is the same process (same start)."""
    pid = holder.get("pid")
    started = process_start_time(pid)
    if started is None:
        return is_pid(pid) and pid_exists_elsewhere(pid)
    recorded = holder.get("started")
    return recorded is None or recorded == started


def pid_exists_elsewhere(pid: int) -> bool:
    """Without /proc (macOS): signal 0 asks whether the pid exists, sending nothing."""
    if Path("/proc/self/stat").exists():
        return False  # /proc is there and has no such process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
