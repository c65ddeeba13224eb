"""Ctrl-C and SIGTERM stop training at the next step boundary, after saving a checkpoint."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.experimental.callback import Callback

from dlcourse.infrastructure import cluster, locks
from dlcourse.infrastructure.cluster import stop_signals, under_slurm
from dlcourse.infrastructure.command_line import resume_command
from dlcourse.infrastructure.errors import FinalTestInterrupted, UserError
from dlcourse.infrastructure.files import write_file
from dlcourse.infrastructure.run_folder import (
    CHECKPOINTS,
    JOURNAL,
    LAST,
    LOCK,
    METRICS,
    STOP_MARKER,
    shortest_path,
)

# Set in the jobs of a sweep whose launcher runs them side by side: their stop signals come from
# the sweep's own process (`ForwardStopToJobs`), never straight from the terminal.
FROM_PARENT = "DLCOURSE_STOP_FROM_PARENT"


class StopSignal:
    """While active, the first SIGINT or SIGTERM (under SLURM, also USR2) only sets `received`;
    the loop polls it.

    A second signal exits at once: the user insists, and the last checkpoint on disk is intact
    because checkpoints are written atomically. Not under SLURM, which may signal twice.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous_handlers: dict[int, object] = {}
        # Set once training is over: a signal then stops the final test at once, with this.
        self.final_test: tuple[str, int] | None = None  # (best checkpoint, step)

    def handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.final_test is not None:
            raise FinalTestInterrupted(signal_number, *self.final_test)
        if under_slurm():
            cluster.received.add(signal_number)
        if self.received is not None and under_slurm() and signal_number != signal.SIGINT:
            # SLURM signals every task, some twice, and preemption is SIGTERM then USR2: never
            # "exit at once"; USR2 (requeue me) wins over SIGTERM.
            if signal_number == signal.SIGUSR2:
                self.received = signal_number
            return
        if self.received is not None:
            print(
                f"\n{signal.Signals(signal_number).name} again: exiting now, without saving.",
                file=sys.stderr,
                flush=True,
            )
            os._exit(128 + signal_number)
        self.received = signal_number
        slurm_stop = under_slurm() and signal_number != signal.SIGINT  # see above
        again = "" if slurm_stop else " (send it again to exit at once)"
        print(
            f"\n{signal.Signals(signal_number).name} received: saving a checkpoint at the end of "
            f"this step{again}.",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may catch signals (e.g. some launchers' workers)
        for signal_number in stop_signals():
            # A job run side by side with others: a terminal's Ctrl-C reaches every process of
            # the group; only the sweep's process acts on it, and tells each job (SIGTERM) once.
            ignored = signal_number == signal.SIGINT and os.environ.get(FROM_PARENT)
            self.previous_handlers[signal_number] = signal.signal(
                signal_number, signal.SIG_IGN if ignored else self.handle
            )
        return self

    def __exit__(self, *exc_info) -> None:
        for signal_number, handler in self.previous_handlers.items():
            signal.signal(signal_number, handler)


class NoStopSignal:
    """The no-op twin, for code that runs off the main thread (where signals cannot be caught)."""

    received: int | None = None
    final_test: tuple[str, int] | None = None


class ForwardStopToJobs(Callback):
    """Hydra callback (configs/launcher/parallel.yaml): in a sweep whose jobs run side by side in
    worker processes, Ctrl-C or SIGTERM to the sweep asks every running job to save and stop
    (SIGTERM, once, to each worker of this sweep that holds a job folder's lock), waits until
    they have (their locks are gone), then ends the workers and the sweep. Jobs that would start
    meanwhile see the sweep's STOP_MARKER and do not. A second signal ends everything at once.

    A lock is only a file: the pid in it is signalled only when it is a process this sweep
    started and the very process that took the lock (same start time), never because a file
    names it (a lock copied from elsewhere, a stale one, pid 0 or -1)."""

    WAIT_SECONDS = 600

    def __init__(self) -> None:
        self.sweep_dir = Path(".")
        self.stopping = False
        self.previous_handlers: dict[int, Any] = {}

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        os.environ[FROM_PARENT] = "1"  # the workers, started after this, inherit it
        for signal_number in StopSignal.SIGNALS:
            self.previous_handlers[signal_number] = signal.signal(signal_number, self.forward)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        """Leave the process as it was (it may go on, e.g. a test that ran the sweep)."""
        os.environ.pop(FROM_PARENT, None)
        for signal_number, handler in self.previous_handlers.items():
            signal.signal(signal_number, handler)

    def forward(self, signal_number: int, frame: FrameType | None) -> None:
        if self.stopping:
            print("\nAgain: the jobs exit now, without saving.", file=sys.stderr, flush=True)
            self.end(signal_number)
        self.stopping = True
        try:
            write_file(self.sweep_dir / STOP_MARKER, "", root=self.sweep_dir)
        except UserError as error:  # a planted link: the running jobs are still told
            print(f"warning: {error}", file=sys.stderr, flush=True)
        print(
            f"\n{signal.Signals(signal_number).name} received: each running job saves a checkpoint "
            f"at the end of its step and stops (send it again to stop them at once).",
            file=sys.stderr,
            flush=True,
        )
        told: set[int] = set()
        deadline = time.monotonic() + self.WAIT_SECONDS
        while (holders := self.lock_holders()) and time.monotonic() < deadline:
            for pid in holders - told:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(pid, signal.SIGTERM)
            told |= holders
            time.sleep(0.2)  # signal handlers stay live here: a second signal ends it at once
        print(self.stopped_jobs(), file=sys.stderr, flush=True)
        (self.sweep_dir / STOP_MARKER).unlink(missing_ok=True)
        sys.exit(128 + signal_number)  # raised where the launcher waits: it ends its (idle) workers

    def stopped_jobs(self) -> str:
        """The sweep's stopped jobs, each with the command that continues it as printed."""
        stopped = sorted(
            last.parent.parent
            for last in self.sweep_dir.glob(f"*/{CHECKPOINTS}/{LAST}")
            if not (last.parent.parent / METRICS).exists()
        )
        lines = [f"Sweep stopped ({len(stopped)} job(s) saved); continue a job with:"]
        lines += [f"  {resume_command(job)}" for job in stopped]
        if (self.sweep_dir / JOURNAL).exists():
            sweep = shortest_path(self.sweep_dir)
            lines.append(f"or continue the search: rerun it with hydra.sweep.dir={sweep}")
        return "\n".join(lines)

    def lock_holders(self) -> set[int]:
        """This sweep's workers that hold a job folder's lock (a lock being written or removed
        right now has no holder to read: it is looked at again in the next round)."""
        workers = descendants(os.getpid())
        pids = set()
        for lock in self.sweep_dir.glob(f"*/{LOCK}"):
            holder = locks.read(lock) or {}
            if (
                locks.is_pid(holder.get("pid"))
                and holder["pid"] in workers
                and locks.holder_alive(holder)
            ):
                pids.add(holder["pid"])
        return pids

    def end(self, signal_number: int) -> None:
        for worker in multiprocessing.active_children():
            os.kill(worker.pid, signal.SIGKILL)
        (self.sweep_dir / STOP_MARKER).unlink(missing_ok=True)
        os._exit(128 + signal_number)


def descendants(pid: int) -> set[int]:
    """The processes below `pid` (children, theirs, ...), from /proc's parent links; where there
    is no /proc, the children that multiprocessing started."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    if not parents:
        return {child.pid for child in multiprocessing.active_children() if child.pid}
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


# The sweep's own process id, set by its SweepStatus callback: the jobs it runs in worker
# processes watch it (`stop_with_the_sweep`).
SWEEP_PROCESS = "DLCOURSE_SWEEP_PROCESS"
# What this worker's watchdog looks after: its thread, and the job folder of its current job
# (a worker runs one job after another, and one watchdog serves them all).
_watchdog: dict[str, Any] = {}


def stop_with_the_sweep(run_dir: Path, interval: float = 1.0) -> None:
    """In a job that a sweep runs side by side with others (FROM_PARENT): a daemon thread that,
    once the sweep's process is gone (kill -9 leaves its workers orphaned, training on), stops
    the job as SIGTERM does (it saves a checkpoint, and running the sweep again resumes it) and
    then ends the worker, so nothing trains for a sweep that no longer exists."""
    if not os.environ.get(FROM_PARENT):
        return
    _watchdog["run_dir"] = Path(run_dir)
    thread = _watchdog.get("thread")
    if thread is not None and thread.is_alive():
        return
    text = os.environ.get(SWEEP_PROCESS, "")
    pid = int(text) if text.isascii() and text.isdigit() else os.getppid()
    if not locks.is_pid(pid) or pid == os.getpid():  # a job run in the sweep's own process
        return
    thread = threading.Thread(
        target=watch_sweep,
        args=(pid, locks.process_start_time(pid), os.getppid() == pid, interval),
        name="dlcourse-sweep-watchdog",
        daemon=True,
    )
    _watchdog["thread"] = thread
    thread.start()


def watch_sweep(pid: int, started: int | None, is_parent: bool, interval: float) -> None:
    """Wait for the sweep's process to end; then SIGTERM the training in this process (once),
    and end the process as soon as it holds no job folder (nothing is left half-saved)."""
    while not sweep_gone(pid, started, is_parent):
        time.sleep(interval)
    with contextlib.suppress(OSError):  # stderr may be a pipe that died with the sweep
        print(
            f"The sweep's process ({pid}) is gone: this job saves a checkpoint and stops (run the "
            f"sweep again to continue it).",
            file=sys.stderr,
            flush=True,
        )
    told = False
    while True:
        handler = signal.getsignal(signal.SIGTERM)
        if isinstance(getattr(handler, "__self__", None), StopSignal):
            if not told:  # training: it saves at the end of this step, then stops
                os.kill(os.getpid(), signal.SIGTERM)
                told = True
        elif not holds_job_folder(_watchdog.get("run_dir")):
            os._exit(128 + signal.SIGTERM)  # between jobs, or before one claimed its folder
        time.sleep(min(interval, 0.2))


def sweep_gone(pid: int, started: int | None, is_parent: bool) -> bool:
    """Whether the sweep's process has ended: this process was handed to another parent, or
    the pid names no process, a dead one (a zombie) or a newer one (another start time)."""
    if is_parent and os.getppid() != pid:
        return True
    if not Path("/proc/self/stat").exists():  # no /proc (macOS): ask whether the pid exists
        try:
            os.kill(pid, 0)  # signal 0 sends nothing; pid is a checked, ordinary pid
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return True
    start = int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None
    return fields[:1] in (["Z"], ["X"]) or start != started


def holds_job_folder(run_dir: Path | None) -> bool:
    """Whether this process holds `run_dir`'s lock (its job is writing there)."""
    holder = locks.read(run_dir / LOCK) if run_dir is not None else None
    return bool(holder) and holder.get("pid") == os.getpid()
