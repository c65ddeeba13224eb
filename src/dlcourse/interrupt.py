"""Ctrl-C and SIGTERM stop training at the next step boundary, after saving a checkpoint."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType


class TrainingInterrupted(Exception):
    """Raised by the trainer once it has saved a checkpoint after a stop signal."""

    def __init__(self, signal_number: int, checkpoint_path: str, step: int) -> None:
        self.signal_number, self.checkpoint_path, self.step = signal_number, checkpoint_path, step
        super().__init__(f"stopped by {signal.Signals(signal_number).name} after step {step}; saved {checkpoint_path}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class StopSignal:
    """While active, the first SIGINT or SIGTERM only sets `received`; the loop polls it.

    A second signal exits at once: the user insists, and the last checkpoint on disk is intact
    because checkpoints are written atomically.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous_handlers: dict[int, object] = {}

    def handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.received is not None:
            print(f"\n{signal.Signals(signal_number).name} again: exiting now, without saving.",
                  file=sys.stderr, flush=True)
            os._exit(128 + signal_number)
        self.received = signal_number
        print(f"\n{signal.Signals(signal_number).name} received: saving a checkpoint at the end of "
              "this step (send it again to exit at once).", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may catch signals (e.g. some launchers' workers)
        for signal_number in self.SIGNALS:
            self.previous_handlers[signal_number] = signal.signal(signal_number, self.handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signal_number, handler in self.previous_handlers.items():
            signal.signal(signal_number, handler)


class NoStopSignal:
    """The no-op twin, for code that runs off the main thread (where signals cannot be caught)."""

    received: int | None = None
