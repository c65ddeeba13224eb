"""Ctrl-C and SIGTERM stop training at the next step boundary, after saving a checkpoint."""

from __future__ import annotations

import contextlib
import json
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

from dlcourse import cluster
from dlcourse.cluster import stop_signals, under_slurm

# Set in the jobs of a sweep whose launcher runs them side by side: their stop signals come from
# the sweep's own process (`ForwardStopToJobs`), never straight from the terminal.
FROM_PARENT = "DLCOURSE_STOP_FROM_PARENT"


class TrainingInterrupted(Exception):
    """Raised by the trainer once it has saved a checkpoint after a stop signal."""

    def __init__(self, signal_number: int, checkpoint_path: str, step: int) -> None:
        self.signal_number = signal_number
        self.checkpoint_path = checkpoint_path
        self.step = step
        super().__init__(
            f"stopped by {signal.Signals(signal_number).name} after step {step}; saved "
            f"{checkpoint_path}"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class FinalTestInterrupted(TrainingInterrupted):
    """A stop signal during the final test: training is over and saved, so the run stops at once."""

    def __init__(self, signal_number: int, checkpoint_path: str, step: int) -> None:
        super().__init__(signal_number, checkpoint_path, step)
        self.args = (
            f"stopped by {signal.Signals(signal_number).name} during the final test, after step "
            f"{step} (the trained weights are in {checkpoint_path})",
        )


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


STOP_MARKER = ".stopping"  # in a sweep's folder while it stops: jobs that start then do not run


class ForwardStopToJobs(Callback):
    """Hydra callback (configs/launcher/parallel.yaml): in a sweep whose jobs run side by side in
    worker processes, Ctrl-C or SIGTERM to the sweep asks every running job to save and stop
    (SIGTERM, once, to each process that holds a job folder's lock), waits until they have
    (the locks are gone), then ends the workers and the sweep. Jobs that would start meanwhile
    see the sweep's STOP_MARKER and do not. A second signal ends everything at once."""

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
        (self.sweep_dir / STOP_MARKER).touch()
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
                os.kill(pid, signal.SIGTERM)
            told |= holders
            time.sleep(0.2)  # signal handlers stay live here: a second signal ends it at once
        print(
            f"Sweep stopped; continue a job with: dlcourse-train resume={self.sweep_dir}/<job>",
            file=sys.stderr,
            flush=True,
        )
        (self.sweep_dir / STOP_MARKER).unlink(missing_ok=True)
        sys.exit(128 + signal_number)  # raised where the launcher waits: it ends its (idle) workers

    def lock_holders(self) -> set[int]:
        """The processes that hold a job folder of this sweep (their pid is in its lock)."""
        pids = set()
        for lock in self.sweep_dir.glob("*/.lock"):
            # A lock being written or removed right now has no pid to read: skip it this time.
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                pids.add(int(json.loads(lock.read_text())["pid"]))
        return pids

    def end(self, signal_number: int) -> None:
        for worker in multiprocessing.active_children():
            os.kill(worker.pid, signal.SIGKILL)
        (self.sweep_dir / STOP_MARKER).unlink(missing_ok=True)
        os._exit(128 + signal_number)
