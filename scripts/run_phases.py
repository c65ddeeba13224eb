"""Where one dlcourse-train run's seconds go: the wall clock of its phases (issue #28 point 3).

    python scripts/run_phases.py OUTPUT.json model=mlp trainer.epochs=3  # then any settings

Runs dlcourse-train in this process with a timer around each phase (start-up and imports,
Hydra, the run's set-up, the training steps, evaluation, pictures, histograms, checkpoints, the
test, the results) and writes their seconds to OUTPUT.json; scripts/bench.py turns them into
its breakdown table. Phases nest (the pictures are inside the evaluation's epoch end): each is
reported whole, and `training steps` is the epochs' own loops.
"""

from __future__ import annotations

import atexit
import functools
import json
import sys
import time
from pathlib import Path

START = time.perf_counter()

from dlcourse import run, trainer  # noqa: E402  (timed: the imports are part of start-up)
from dlcourse.infrastructure import loggers, run_files  # noqa: E402

IMPORTED = time.perf_counter() - START
# (owner, function, phase)
PHASES = [
    (run, "train", "the run, from its config to its results"),
    (run, "setup_runtime", "set-up: threads, seeds, device"),
    (run, "build_components", "set-up: data, model, loss (and their check)"),
    (run, "prepare_training", "set-up: optimizer and scheduler (imports torch._dynamo)"),
    (run, "run_outputs", "set-up: loggers and run files"),
    (trainer.Trainer, "train_one_epoch", "training steps"),
    (trainer.Trainer, "evaluate", "evaluation: val and test splits, with their review"),
    (trainer.Trainer, "log_pictures", "pictures: drawn and PNG-encoded"),
    (loggers.TensorBoardLogger, "log_histograms", "histograms"),
    (trainer.Trainer, "save", "checkpoints"),
    (run_files.RunFiles, "write_results", "results: metrics.json, model.safetensors"),
    (loggers.TensorBoardLogger, "close", "TensorBoard: closing its event files"),
]
seconds: dict[str, float] = {}


def timed(function, phase: str):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - started

    return wrapper


def report(output: Path) -> None:
    total = time.perf_counter() - START
    phases = {"start-up: Python and imports": IMPORTED, **seconds}
    run_seconds = seconds.get(PHASES[0][2], 0.0)
    phases["Hydra and the command around the run"] = total - IMPORTED - run_seconds
    output.write_text(json.dumps({"total": total, "phases": phases}, indent=2) + "\n")


def main() -> None:
    output = Path(sys.argv[1])
    for owner, name, phase in PHASES:
        setattr(owner, name, timed(getattr(owner, name), phase))
    atexit.register(report, output)
    sys.argv = ["dlcourse-train", *sys.argv[2:]]
    from dlcourse.commands import console

    console.train()


if __name__ == "__main__":
    main()
