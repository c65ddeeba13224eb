"""What a command line holds, and what dlcourse prints to be pasted into one: the settings a
resume may change (passed to Hydra as ++key=value), path settings quoted for Hydra's override
grammar, and the resume command quoted for a POSIX shell."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from dlcourse.infrastructure.config import DATA_LOCATIONS
from dlcourse.infrastructure.run_folder import shortest_path

# Settings a resume may change: they do not change what the saved state means.
CHANGEABLE_ON_RESUME = (
    "trainer.",
    "optimizer.",
    "paths.",
    *(f"dataset.{key}" for key in DATA_LOCATIONS),
    "dataset.cache_bytes",
    "dataset.on_bad_image",
    "dataset.eval_batch_size",
    "dataset.num_workers",
    "dataset.download_missing",
    "optimized_metric",
)


def resume_arguments(arguments: list[str]) -> list[str]:
    """A command line with its resume-changeable dataset settings passed as `++key=value`.

    A resume's config comes from its checkpoint, but Hydra composes the defaults first
    (dataset=mnist), which lack settings the run's own dataset has: `resume=<run>
    dataset.root=<moved folder>` of an image-folder run would be refused there. `++` sets or
    adds; `resume.check_override` then judges each against the stopped run's config."""
    if not any(a.startswith("resume=") and a != "resume=auto" for a in arguments):
        return arguments
    return [
        f"++{a}" if a.startswith("dataset.") and a.startswith(CHANGEABLE_ON_RESUME) else a
        for a in arguments
    ]


def resume_command(folder: Path) -> str:
    """The command that continues the run in `folder`, as it pastes into a POSIX shell."""
    return f"dlcourse-train {shell_quote('resume=' + hydra_quote(shortest_path(folder)))}"


def shell_quote(word: str) -> str:
    """`word` for a POSIX shell: as it is when safe, in double quotes when only Hydra's single
    quotes need protecting (the common case), else shlex's single-quote form."""
    if shlex.quote(word) == word or not re.search(r'[$`"\\!]', word):
        return word if shlex.quote(word) == word else f'"{word}"'
    return shlex.quote(word)


def hydra_quote(value: str) -> str:
    """A value as Hydra's override grammar reads it back verbatim: quoted when it holds
    characters the grammar gives a meaning to (spaces, brackets, quotes, $, ...)."""
    if all(c.isalnum() or c in "/._-+:@%~" for c in value):
        return value
    # Inside quotes, Hydra reads \' as a quote, and \\ as a backslash only before a quote.
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


# Settings whose values are paths: a folder dlcourse printed may hold what Hydra's override
# grammar reads otherwise (a sweep job's 3_model=mlp_optimizer.lr=0.1, a list's [64,32]).
PATH_SETTINGS = (
    *("resume", "ckpt_path", "output_path", "data_dir", "root", "paths."),
    *("hydra.run.dir", "hydra.sweep.dir", *(f"dataset.{key}" for key in DATA_LOCATIONS)),
)

# Words Hydra's grammar reads as floats: after a top-level key (a config group: debug=nan), the
# name of an option.
NUMBER_WORDS = ("nan", "inf", "+inf", "-inf")

SWEEP_SYNTAX = ("choice(", "range(", "interval(", "glob(", "tag(", "sort(", "shuffle(")


def quote_paths(arguments: list[str]) -> list[str]:
    """A command line with the values of path settings quoted for Hydra (`hydra_quote`), so
    that every path dlcourse prints is taken back as printed. Left as they are: values already
    quoted, sweeps over paths (`resume=a,b` when no such path exists, `glob(...)`)."""

    def quoted(argument: str) -> str:
        key, equals, value = argument.partition("=")
        if equals and "." not in key and value.lower() in NUMBER_WORDS:
            return f"{key}='{value}'"  # debug=nan: the option's name, not a float
        if not equals or not key.lstrip("+~").startswith(PATH_SETTINGS) or not value:
            return argument
        if value[0] in "'\"" or value.startswith(SWEEP_SYNTAX):
            return argument
        if "," in value and not os.path.lexists(os.path.expanduser(value)):
            return argument
        return f"{key}={hydra_quote(value)}"

    return [quoted(argument) for argument in arguments]
