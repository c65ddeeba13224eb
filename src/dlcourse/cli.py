"""The console commands of pyproject.toml's [project.scripts].

Each imports its module only when it runs, so that Ctrl-C at any moment of start-up (while
torch or Hydra is still being imported) exits quietly with status 130 instead of a traceback.
The modules themselves run with `python -m dlcourse.train` etc. as well.
"""

from __future__ import annotations

import importlib
import sys


def run_quietly(module: str) -> None:
    try:
        importlib.import_module(module).main()
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr, flush=True)
        sys.exit(130)


def train() -> None:
    run_quietly("dlcourse.train")


def evaluate() -> None:
    run_quietly("dlcourse.evaluate")


def predict() -> None:
    run_quietly("dlcourse.predict")


def sweep_report() -> None:
    run_quietly("dlcourse.sweep")


def gradcheck() -> None:
    run_quietly("dlcourse.gradcheck")


def summary() -> None:
    run_quietly("dlcourse.summary")
