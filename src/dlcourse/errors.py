"""The one exception type that reaches the user as a message instead of a traceback."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix (bad input, missing files): its text says what and how."""


class DataError(UserError):
    """A file of the dataset that turned out unreadable while training (an image that does not
    decode): the trainer saves the run's place before it stops, so the run can be resumed."""


class SweepError(UserError):
    """A mistake that every job of a sweep shares (say, the metric to optimise): it stops the
    whole sweep at once instead of failing each job in turn."""


def exit_on_user_error(function: Callable[..., T]) -> Callable[..., T]:
    """Turn a `UserError` raised by an entry point into one line on stderr and exit status 2;
    a full disk likewise (status 1), and Ctrl-C before training starts into a quiet 130."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(2)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            print(
                f"error: no space left on the device ({error.filename or error}); free some and "
                f"run again (checkpoints already written are intact)",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(1)
        except KeyboardInterrupt:
            print("\nInterrupted before anything needed saving.", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper


def write_text(path: str | Path, text: str) -> None:
    """Write a small text file, turning the ways that can fail (no such folder, a folder in the
    way, no permission) into one `UserError` naming the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
