"""The one exception type that reaches the user as a message instead of a traceback."""

from __future__ import annotations

import errno
import functools
import re
import sys
import unicodedata
from collections.abc import Callable
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


# Terminal escape sequences: CSI (colours, cursor moves, ESC [ or its 8-bit form), OSC (window
# titles, links; ended by BEL or ST), and the two-character ones (ESC c resets the terminal).
ESCAPE_SEQUENCES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]"
)


def printable(text: str) -> str:
    """`text` (a class name, a metric name: read from a file someone else made) safe to print:
    escape sequences and control characters removed, so that a name cannot recolour, move or
    rewrite the terminal, break a line, or hide what follows it (bidirectional overrides).
    Unpaired surrogates (undecodable bytes of a file name) go too: printing them would fail."""
    text = ESCAPE_SEQUENCES.sub("", str(text))
    return "".join(
        character
        for character in text
        if unicodedata.category(character)[0] != "C"
        and unicodedata.category(character) not in ("Zl", "Zp")
    )
