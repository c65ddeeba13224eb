"""The exceptions that end a command: a `UserError` reaches the user as one message instead of a
traceback; a `TrainingInterrupted` says that a stop signal ended the run, after it saved."""

from __future__ import annotations

import contextlib
import errno
import functools
import re
import signal
import sys
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix (bad input, missing files): its text says what and how."""


class DataError(UserError):
    """A file of the dataset that turned out unreadable while training (an image that does not
    decode): the trainer saves the run's place before it stops, so the run can be resumed."""


class SweepError(UserError):
    """A mistake that every job of a sweep shares (say, the metric to optimise): it stops the
    whole sweep at once instead of failing each job in turn."""


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


def exit_on_user_error(function: Callable[..., T]) -> Callable[..., T]:
    """An entry point whose errors come out as `errors_as_messages` says."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with errors_as_messages():
            return function(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def errors_as_messages() -> Iterator[None]:
    """Turn a `UserError` into one line on stderr and exit status 2; a full disk likewise
    (status 1), and Ctrl-C before training starts into a quiet 130."""
    try:
        yield
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


# What would move the cursor, end a line or reorder text where a name read from a file is
# shown: C0 and C1 control characters, DEL, Unicode's line and paragraph separators and
# bidirectional overrides, and the lone surrogates that stand for bytes that are not UTF-8.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def clean(text: Any) -> str:
    """`text` on one line, its control characters escaped as Python writes them (\\n, \\x1b)."""
    return UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], str(text))
