"""The console commands of pyproject.toml's [project.scripts].

Each imports its module only when it runs, and Ctrl-C at any moment of start-up (while torch
or Hydra is still being imported, the config composed, the data read) exits quietly with status
130 instead of a traceback; once training runs, the trainer catches it to save first.
Mistakes that Hydra finds before a command's own code runs (an unknown option, a YAML file it
cannot read) come out as Hydra's message alone, without the traceback Hydra would print around
some of them; a traceback is left only for what is a bug. The modules run with
`python -m dlcourse.train` etc. as well.
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
import threading


def run_quietly(module: str) -> None:
    threading.excepthook = quiet_about_a_full_disk
    os.environ.setdefault(
        "HYDRA_FULL_ERROR", "1"
    )  # Hydra raises its errors to us instead of printing them
    # Until training starts (which catches Ctrl-C itself, to save first) there is nothing to save:
    # exit at once. A KeyboardInterrupt raised inside Hydra's or OmegaConf's start-up can leave
    # them half-initialised and surface as some other error, with a traceback.
    previous = signal.signal(signal.SIGINT, exit_at_once)
    try:
        importlib.import_module(module).main()
    except Exception as error:
        message = configuration_error(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        signal.signal(signal.SIGINT, previous)


def exit_at_once(signal_number: int, frame: object) -> None:
    print("\nInterrupted.", file=sys.stderr, flush=True)
    os._exit(130)


def configuration_error(error: Exception) -> str | None:
    """Hydra's or OmegaConf's message for a mistake in a command line or a config file; None for
    anything else."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for candidate in (error, error.__cause__):
        if isinstance(candidate, yaml.YAMLError):
            return f"a config file cannot be read: {' '.join(str(candidate).split())}"
        if isinstance(candidate, (HydraException, OmegaConfBaseException)):
            return str(candidate).strip()
    return None


def quiet_about_a_full_disk(args: threading.ExceptHookArgs) -> None:
    """A background writer (TensorBoard's) that meets a full disk: the main thread meets it too
    and says so in one line, so the thread's traceback would only bury that line."""
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in (errno.ENOSPC, errno.EDQUOT):
        return
    threading.__excepthook__(args)


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
