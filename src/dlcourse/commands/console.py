"""The console scripts of pyproject.toml's [project.scripts]: each starts its command quietly.

Each imports its module only when it runs, and Ctrl-C at any moment of start-up (while torch
or Hydra is still being imported, the config composed, the data read) exits quietly with status
130 instead of a traceback; once training runs, the trainer catches it to save first.
Mistakes that Hydra finds before a command's own code runs (an unknown option, a YAML file it
cannot read) come out as Hydra's message alone, without the traceback Hydra would print around
some of them; a traceback is left only for what is a bug. The modules run with
`python -m dlcourse.commands.train` etc. as well.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import gc
import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def quiet_start_up(config_name: str | None = None) -> Iterator[None]:
    """Around a command's import and `main`; `config_name`: its Hydra config (for suggestions
    on mistakes)."""
    threading.excepthook = quiet_about_a_full_disk
    os.environ.setdefault(
        "HYDRA_FULL_ERROR", "1"
    )  # Hydra raises its errors to us instead of printing them
    # Until training starts (which catches Ctrl-C itself, to save first) there is nothing to save:
    # exit at once. A KeyboardInterrupt raised inside Hydra's or OmegaConf's start-up can leave
    # them half-initialised and surface as some other error, with a traceback.
    previous = signal.signal(signal.SIGINT, exit_at_once)
    from dlcourse.infrastructure.errors import errors_as_messages

    try:
        # Around Hydra's main too: a sweeper's refusal (hydra_plugins) comes from outside a job.
        with logging_as_it_was(), errors_as_messages():
            yield
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os._exit(0)
    except Exception as error:
        message = configuration_error(error, config_name)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def logging_as_it_was():
    """Hydra configures logging for a command (a console handler on the sys.stdout of that
    moment); a command run inside a longer-lived process (a notebook, a test) must not leave
    those handlers behind, writing to a stream that may be closed by then."""
    import logging

    def all_loggers() -> list[logging.Logger]:
        named = logging.root.manager.loggerDict.values()
        return [logging.root, *(x for x in named if isinstance(x, logging.Logger))]

    before = {logger: (list(logger.handlers), logger.level) for logger in all_loggers()}
    try:
        yield
    finally:
        for logger in all_loggers():
            handlers, level = before.get(logger, ([], logging.NOTSET))
            for handler in set(logger.handlers) - set(handlers):
                handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)


def exit_at_once(signal_number: int, frame: object) -> None:
    print("\nInterrupted.", file=sys.stderr, flush=True)
    os._exit(130)


def configuration_error(error: Exception, config_name: str | None = None) -> str | None:
    """One message for a mistake in a command line or a config file (a did-you-mean for a
    mistyped key or option); None for anything else."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for candidate in (error, error.__cause__):
        if isinstance(candidate, yaml.YAMLError):
            return f"a config file cannot be read: {' '.join(str(candidate).split())}"
        if isinstance(candidate, (HydraException, OmegaConfBaseException)):
            return explain(str(candidate).strip(), config_name)
    return None


def explain(message: str, config_name: str | None) -> str:
    """Hydra's message, made one line with suggestions where it names an unknown key or option."""
    unknown_option = re.search(r"Could not find '(.+)/([^/']+)'", message)
    if unknown_option:
        group, option = unknown_option.groups()
        options = re.findall(r"^\t(\S+)$", message.split("Config search path")[0], re.M)
        hint = did_you_mean(option, options, f"{group}=")
        return (
            f"{group}={option} is not an option of {group}{hint}; its options: {', '.join(options)}"
        )
    unknown_key = re.search(r"Could not override '([^']+)'", message)
    if unknown_key and config_name:
        key = unknown_key.group(1)
        parent, _, name = key.rpartition(".")
        siblings = known_keys(config_name, parent)
        if siblings is None:  # the mistake is higher up: optimzer.lr
            parent, name = "", key.split(".")[0]
            siblings = known_keys(config_name, parent)
            key = name
        if siblings is not None:
            where = f"a setting of {parent}" if parent else "a top-level setting"
            hint = did_you_mean(name, siblings, f"{parent}." if parent else "")
            if name in siblings.arguments:  # the component takes it; its YAML leaves it out
                hint = f" (its YAML leaves it out: add it with +{key}=...)"
            return f"{key} is not {where}{hint}; its settings: {', '.join(siblings)}"
    return message


class Keys(list):
    """A config node's keys, and the arguments its `_target_` takes (which may be more)."""

    arguments: tuple[str, ...] = ()


def known_keys(config_name: str, parent: str) -> Keys | None:
    """The keys under `parent` in the config that this command line composes (its group choices,
    such as model=cnn or experiment=..., but none of its settings); None: no such node."""
    import inspect

    from hydra import compose, initialize_config_dir
    from hydra.utils import get_object
    from omegaconf import DictConfig, OmegaConf

    from dlcourse.infrastructure.config import config_dir, register_resolvers

    register_resolvers()
    choices = [a for a in sys.argv[1:] if re.fullmatch(r"[\w/]+=[^=]*", a) and "." not in a]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        try:
            cfg = compose(config_name=config_name, overrides=choices)
        except Exception:  # a choice that is itself wrong: the defaults still give the keys
            cfg = compose(config_name=config_name)
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return None
    keys = Keys(k for k in node if not k.startswith("_"))
    with contextlib.suppress(Exception):  # no _target_, or one that cannot be imported
        keys.arguments = tuple(inspect.signature(get_object(node._target_)).parameters)
    return keys


def did_you_mean(word: str, choices: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(word, choices, n=2, cutoff=0.65)
    return f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""


def quiet_about_a_full_disk(args: threading.ExceptHookArgs) -> None:
    """A background writer (TensorBoard's) that meets a full disk: the main thread meets it too
    and says so in one line, so the thread's traceback would only bury that line."""
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in (errno.ENOSPC, errno.EDQUOT):
        return
    threading.__excepthook__(args)


def train() -> None:
    """`dlcourse-train [overrides]`: see dlcourse/commands/train.py."""
    if "--describe" in sys.argv:
        try:
            sys.exit(describe(sys.argv[sys.argv.index("--describe") + 1 :]))
        except BrokenPipeError:
            os._exit(0)
    # No garbage collection during start-up: nearly all it builds (torch, Hydra, the data, the
    # model) lives as long as the process. The run turns it back on once built
    # (dlcourse.infrastructure.runtime.startup_objects_frozen).
    gc.disable()
    try:
        with quiet_start_up("train"):
            from dlcourse.infrastructure.command_line import quote_paths, resume_arguments

            sys.argv[1:] = quote_paths(resume_arguments(sys.argv[1:]))
            importlib.import_module("dlcourse.commands.train").main()
    finally:
        gc.enable()  # where no run started (a refusal, --help)
        gc.freeze()  # the process ends: spare its exit a scan of every object (≈ 0.7 s)


def describe(names: list[str]) -> int:
    """`dlcourse-train --describe [GROUP | GROUP/OPTION ...]`: each option's YAML, comments
    and all, from configs/ (no GROUP: the groups and their options)."""
    from dlcourse.infrastructure.config import config_dir

    root = Path(config_dir())
    groups = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "hydra")
    if not names:
        for group in groups:
            print(f"{group}: {', '.join(sorted(p.stem for p in (root / group).glob('*.yaml')))}")
        print("\nSee one group's settings: dlcourse-train --describe optimizer")
        return 0
    for name in names:
        group, _, option = name.partition("/")
        files = sorted((root / group).glob(f"{option or '*'}.yaml")) if group in groups else []
        if not files:
            hint = did_you_mean(group, groups, "")
            print(
                f"error: no config group or option {name!r}{hint}; groups: {', '.join(groups)}",
                file=sys.stderr,
            )
            return 2
        for path in files:
            print(f"# ---- {group}={path.stem}  (configs/{group}/{path.name})")
            print(path.read_text())
    return 0


def evaluate() -> None:
    """`dlcourse-eval ckpt_path=<run or .pt>`: see dlcourse/commands/evaluate.py."""
    with quiet_start_up("eval"):  # Ctrl-C while Hydra is imported, too: a quiet exit
        from dlcourse.infrastructure.command_line import quote_paths

        sys.argv[1:] = quote_paths(sys.argv[1:])
        importlib.import_module("dlcourse.commands.evaluate").main()


def predict() -> None:
    """`dlcourse-predict <run or .pt> image.png ...`: see dlcourse/commands/predict.py."""
    with quiet_start_up():
        importlib.import_module("dlcourse.commands.predict").main()


def export() -> None:
    """`dlcourse-export <run> --format onnx|torch-export|safetensors`: see commands/export.py."""
    with quiet_start_up():
        importlib.import_module("dlcourse.commands.export").main()


def sweep_report() -> None:
    """`dlcourse-sweep-report outputs/multirun/<sweep>`: see dlcourse/commands/sweep_report.py."""
    with quiet_start_up():
        importlib.import_module("dlcourse.commands.sweep_report").main()


def runs() -> None:
    """`dlcourse-runs [folder]`: see dlcourse/commands/runs.py."""
    with quiet_start_up():
        importlib.import_module("dlcourse.commands.runs").main()


def compare() -> None:
    """`dlcourse-compare A B`: see dlcourse/commands/compare.py."""
    with quiet_start_up():
        importlib.import_module("dlcourse.commands.compare").main()


def gradcheck() -> None:
    """`dlcourse-gradcheck model=... loss=...`: see dlcourse/commands/gradcheck.py."""
    with quiet_start_up("gradcheck"):
        importlib.import_module("dlcourse.commands.gradcheck").main()


def summary() -> None:
    """`dlcourse-summary model=...`: see dlcourse/commands/summary.py."""
    with quiet_start_up("summary"):
        importlib.import_module("dlcourse.commands.summary").main()


def lr_find() -> None:
    """`dlcourse-lr-find experiment=...`: see dlcourse/commands/lr_find.py."""
    with quiet_start_up("lr_find"):
        importlib.import_module("dlcourse.commands.lr_find").main()
