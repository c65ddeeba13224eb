"""Looking inside a run (the debug= presets, configs/debug/): a torch.profiler trace of some
training steps, and autograd's anomaly detection.

    dlcourse-train debug=profiler     # <run>/profile/*.pt.trace.json: open it in ui.perfetto.dev
    dlcourse-train debug=nan          # the operation that first made a nan / inf, named

The trace is Chrome's trace format, as torch.profiler writes it for TensorBoard's profile plugin
(pip install torch-tb-profiler; tensorboard --logdir <run>/profile) and Perfetto.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from dlcourse.infrastructure.run_folder import PROFILE

WARMUP_STEPS = 1  # the first step pays for allocations and kernel choices: traced apart


class StepProfiler:
    """torch.profiler over the training steps: one warm-up step, then `steps` traced ones."""

    def __init__(self, steps: int, run_dir: Path) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self.folder = run_dir / PROFILE
        self.profiler = profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=WARMUP_STEPS, active=steps, repeat=1),
            on_trace_ready=tensorboard_trace_handler(str(self.folder)),
            record_shapes=True,
        )

    def step(self) -> None:
        self.profiler.step()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self.profiler:
            yield


class NoProfiler:
    """The no-op twin: no trace (the default, and every rank but the first)."""

    def step(self) -> None:
        pass

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        yield


def step_profiler(steps: int | None, run_dir: Path, is_main: bool) -> StepProfiler | NoProfiler:
    return StepProfiler(steps, run_dir) if steps and is_main else NoProfiler()


def is_anomaly(error: RuntimeError) -> bool:
    """The error autograd's anomaly detection raises when a backward step made a nan or inf."""
    return "returned nan values" in str(error) or "returned inf values" in str(error)
