"""The one exception type that reaches the user as a message instead of a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix (bad input, missing files): its text says what and how."""


class SweepError(UserError):
    """A mistake that every job of a sweep shares (say, the metric to optimise): it stops the
    whole sweep at once instead of failing each job in turn."""


def exit_on_user_error(function: Callable[..., T]) -> Callable[..., T]:
    """Turn a `UserError` raised by an entry point into one line on stderr and exit status 2."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
