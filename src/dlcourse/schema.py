"""Check a composed config before anything is loaded: every key known, every value of its type.

Each component's settings are checked against the signature of the class or function its
`_target_` names (its type hints are the schema), the trainer's against `TrainerSettings`, and
a short table holds the values that no run can use. Hydra itself already refuses unknown group
options (`model=resnet`) and new keys given without `+`.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any, Callable

from hydra.utils import get_object

from dlcourse.errors import UserError
from dlcourse.settings import TrainerSettings

# Arguments that the run passes at the call, not the config.
RUNTIME_ARGUMENTS = {
    "model": set(), "loss": set(), "dataset": {"device"},
    "optimizer": {"params"}, "scheduler": {"optimizer", "total_steps", "steps_per_epoch"},
}
# Values that no run can use: (key, test, what the value must be).
LIMITS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("optimizer.lr", lambda value: value > 0, "greater than 0"),
    ("dataset.batch_size", lambda value: value >= 1, "at least 1"),
    ("dataset.eval_batch_size", lambda value: value >= 1, "at least 1"),
    ("dataset.val_size", lambda value: value >= 1, "at least 1"),
    ("trainer.epochs", lambda value: value >= 1, "at least 1"),
    ("trainer.log_every_n_steps", lambda value: value >= 1, "at least 1"),
    ("trainer.histogram_every_n_steps", lambda value: value >= 0, "0 (never) or more"),
    ("trainer.eval_every_n_epochs", lambda value: value >= 1, "at least 1"),
    ("trainer.grad_clip", lambda value: value >= 0, "0 (off) or more"),
]


def validate_config(config: dict[str, Any]) -> None:
    """Raise one `UserError` naming the first bad key, and what it should be."""
    if not isinstance(config.get("seed"), int) or isinstance(config.get("seed"), bool):
        raise UserError(f"seed={config.get('seed')!r} should be an integer")
    for key, runtime in RUNTIME_ARGUMENTS.items():
        check_arguments(key, config[key], locate(key, config[key]), runtime)
    check_arguments("trainer", config["trainer"], TrainerSettings, set())
    for key, test, requirement in LIMITS:
        group, name = key.split(".")
        value = config.get(group, {}).get(name)
        if isinstance(value, (int, float)) and not test(value):
            raise UserError(f"{key}={value} is impossible: it must be {requirement}")


def locate(key: str, node: dict[str, Any]) -> Callable:
    target = node.get("_target_")
    try:
        return get_object(target)
    except Exception:
        raise UserError(f"{key}._target_={target!r} cannot be imported; check the name in configs/{key}/") from None


def check_arguments(key: str, node: dict[str, Any], target: Callable, runtime: set[str]) -> None:
    """Every key of `node` is a parameter of `target`, of the type its hint names."""
    parameters = inspect.signature(target).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # hints that do not evaluate: check names only
        hints = {}
    for name, value in node.items():
        if name.startswith("_"):
            continue
        if name not in parameters and not takes_any:
            known = ", ".join(p for p in parameters if p not in runtime and p not in ("self", "args", "kwargs"))
            raise UserError(f"{key}.{name} is not a setting of {key} ({target.__name__}); its settings are: {known}")
        if name in hints and not matches(value, hints[name]):
            raise UserError(f"{key}.{name}={value!r} has the wrong type: expected {describe(hints[name])}")


def matches(value: Any, hint: Any) -> bool:
    """Whether a plain config value (from YAML or the command line) fits a type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args and type(value) in {type(arg) for arg in args}
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence):
        element = args[0] if args else typing.Any
        return isinstance(value, (list, tuple)) and all(matches(item, element) for item in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if inspect.isclass(hint):
        return isinstance(value, hint)
    return True  # a hint this checker does not know: let the component judge


def describe(hint: Any) -> str:
    """A type hint in words a student reads: 'float', 'int or None', 'one of stop, skip'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args if getattr(arg, "__name__", "") != "Tensor")
    if origin is typing.Literal:
        return "one of " + ", ".join(str(arg) for arg in dict.fromkeys(str(a) for a in args))
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {describe(args[0])}" if args else "a list"
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))
