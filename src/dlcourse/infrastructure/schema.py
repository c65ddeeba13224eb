"""What a config may hold, checked before anything is loaded: every key known, every value of
its type and within its limits.

Each component's settings are checked against the signature of the class or function its
`_target_` names (its type hints are the schema), the trainer's against `TrainerSettings` (the
`trainer:` group as a typed dataclass), and a short table holds the values that no run can use.
Hydra itself already refuses unknown group
options (`model=resnet`) and new keys given without `+`.
"""

from __future__ import annotations

import collections.abc
import copy
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hydra.utils import get_object

from dlcourse.infrastructure.config import COMPONENTS, SIZES_FROM_DATA, trainer_defaults
from dlcourse.infrastructure.errors import UserError

DEVICES = r"auto|cpu|cuda|cuda:\d+|mps"  # the values of trainer.device (a regular expression)


def default(name: str) -> Any:
    """A TrainerSettings field whose default is configs/trainer/default.yaml's (a fresh copy)."""
    return field(default_factory=lambda: copy.deepcopy(trainer_defaults()[name]))


@dataclass
class TrainerSettings:
    """The `trainer:` config group, typed. The defaults are configs/trainer/default.yaml's, whose
    comments say what the settings do; a checkpoint written before a setting existed gets it."""

    epochs: int = default("epochs")
    device: str = default("device")
    # The command line reads trainer.precision=32 as a number: taken, and stored as "32".
    precision: Literal["32", "bf16", "16-mixed", 32] = default("precision")
    grad_clip: float = default("grad_clip")
    limit_train_batches: int | float | None = default("limit_train_batches")
    limit_eval_batches: int | float | None = default("limit_eval_batches")
    log_every_n_steps: int = default("log_every_n_steps")
    histogram_every_n_steps: int | None = default("histogram_every_n_steps")
    eval_every_n_epochs: int = default("eval_every_n_epochs")
    test_curve: bool = default("test_curve")
    progress_bar: bool | None = default("progress_bar")
    on_nonfinite: Literal["stop", "skip"] = default("on_nonfinite")
    deterministic: bool = default("deterministic")
    num_threads: int | None = default("num_threads")
    channels_last: bool = default("channels_last")
    compile: bool = default("compile")
    early_stopping: dict[str, int | None] = default("early_stopping")
    ema_decay: float = default("ema_decay")
    keep_checkpoints: bool = default("keep_checkpoints")
    detect_anomaly: bool = default("detect_anomaly")
    profile_steps: int | None = default("profile_steps")
    batch_members: bool = default("batch_members")

    def __post_init__(self) -> None:
        self.precision = str(self.precision)

    def train_batches(self, total: int) -> int:
        """The batches an epoch trains on, of `total` (see `limited`)."""
        return limited(self.limit_train_batches, total)

    def eval_batches(self, total: int) -> int:
        return limited(self.limit_eval_batches, total)


def limited(limit: int | float | None, total: int) -> int:
    """A limit on batches as Lightning reads it: an int is a count, a float a fraction of `total`
    (at least one batch); None: all of them."""
    if limit is None:
        return total
    if isinstance(limit, float):
        return min(total, max(1, int(total * limit)))
    return min(total, limit)


def is_batch_limit(value: int | float) -> bool:
    """A count of at least 1, or a fraction above 0 and up to 1."""
    if isinstance(value, float):
        return 0 < value <= 1
    return value >= 1


# Arguments that the run passes at the call, not the config.
RUNTIME_ARGUMENTS = {
    **{group: set() for group in COMPONENTS},
    "dataset": {"device"},
    "optimizer": {"params"},
    "scheduler": {"optimizer", "total_steps", "steps_per_epoch"},
}
FLOAT32_MAX = 3.4e38  # larger learning rates cannot even be multiplied into float32 weights
# Sizes that a model needs at least one of (a list: each entry); other model integers must be ≥ 0.
MODEL_SIZES = (
    "input_size",
    "num_classes",
    "image_size",
    "in_channels",
    "channels",
    "widths",
    "hidden_sizes",
    "kernel_sizes",
    "strides",
    "k",
    "chunk_size",
)


def at_least(bound: float) -> Callable[[Any], bool]:
    """A test that a number, or every number in a list, is finite and at least `bound`."""
    return lambda value: all(
        math.isfinite(v) and v >= bound for v in (value if isinstance(value, list) else [value])
    )


def between(low: float, high: float) -> Callable[[Any], bool]:
    """A test that a number is finite and low < value < high."""
    return lambda value: math.isfinite(value) and low < value < high


# Values that no run can use: (key, test, what the value must be). Unset (None) values pass.
LIMITS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", lambda value: 0 <= value < 2**63, "between 0 and 2**63 - 1"),
    ("optimizer.lr", between(0, FLOAT32_MAX), "greater than 0 (and below 3.4e38)"),
    ("optimizer.weight_decay", at_least(0), "0 or more"),
    ("optimizer.momentum", at_least(0), "0 or more"),
    ("scheduler.min_lr", at_least(0), "0 or more"),
    ("scheduler.max_lr", between(0, FLOAT32_MAX), "greater than 0"),
    ("scheduler.gamma", between(0, FLOAT32_MAX), "greater than 0"),
    ("scheduler.step_epochs", between(0, math.inf), "greater than 0"),
    ("scheduler.pct_start", between(0, 1), "between 0 and 1"),
    ("dataset.batch_size", at_least(1), "at least 1"),
    ("dataset.eval_batch_size", at_least(1), "at least 1"),
    ("dataset.val_size", at_least(1), "at least 1"),
    ("dataset.train_subset", at_least(1), "at least 1, or null for all"),
    ("dataset.num_workers", at_least(0), "0 or more"),
    ("dataset.image_size", at_least(1), "at least 1"),
    ("dataset.crop_padding", at_least(0), "0 (off) or more"),
    ("dataset.cache_bytes", at_least(0), "0 (always stream) or more"),
    ("dataset.val_fraction", between(0, 1), "between 0 and 1"),
    ("dataset.seed", lambda value: 0 <= value < 2**63, "between 0 and 2**63 - 1"),
    ("loss.label_smoothing", lambda value: 0 <= value <= 1, "between 0 and 1"),
    ("trainer.epochs", at_least(1), "at least 1"),
    (
        "trainer.device",
        lambda value: re.fullmatch(DEVICES, value) is not None,
        "auto, cpu, cuda, cuda:N or mps",
    ),
    (
        "trainer.limit_train_batches",
        is_batch_limit,
        "at least 1 (batches), a fraction such as 0.25, or null for the whole epoch",
    ),
    (
        "trainer.limit_eval_batches",
        is_batch_limit,
        "at least 1 (batches), a fraction such as 0.25, or null for the whole split",
    ),
    ("trainer.profile_steps", at_least(1), "at least 1 (steps), or null: no profile"),
    ("trainer.log_every_n_steps", at_least(1), "at least 1"),
    ("trainer.histogram_every_n_steps", at_least(0), "0 (never) or more"),
    ("trainer.eval_every_n_epochs", at_least(1), "at least 1"),
    ("trainer.grad_clip", at_least(0), "0 (off) or more"),
    ("trainer.ema_decay", lambda value: 0 <= value < 1, "0 (off), or below 1 (e.g. 0.999)"),
    ("trainer.early_stopping.patience", at_least(1), "at least 1 (evaluations), or null: never"),
    (
        "trainer.num_threads",
        lambda value: 1 <= value <= 1024,
        "between 1 and 1024, or null for torch's default",
    ),
    *(
        (f"model.{name}", at_least(1), "at least 1 (each entry, for a list)")
        for name in MODEL_SIZES
    ),
]


def validate_config(config: dict[str, Any], groups: tuple[str, ...] = COMPONENTS) -> None:
    """Raise one `UserError` naming the first bad key, and what it should be. `groups`: the
    components to check (a tool such as dlcourse-summary builds only a model)."""
    if not isinstance(config.get("seed"), int) or isinstance(config.get("seed"), bool):
        raise UserError(f"seed={config.get('seed')!r} should be an integer")
    for key in groups:
        node = config[key]
        if key == "model":  # null sizes are the data's to set (config.fill_model_sizes)
            node = {k: v for k, v in node.items() if not (k in SIZES_FROM_DATA and v is None)}
        check_arguments(key, node, locate(key, node), RUNTIME_ARGUMENTS[key])
    if "trainer" in config:
        check_arguments("trainer", config["trainer"], TrainerSettings, set())
    check_limits(config, LIMITS)
    check_integers(config, "")
    negative = [
        name for name, value in config["model"].items() if isinstance(value, int) and value < 0
    ]
    if negative:
        name = negative[0]
        raise UserError(
            f"model.{name}={config['model'][name]} is impossible: sizes cannot be negative"
        )


def check_integers(node: Any, where: str) -> None:
    """No integer anywhere beyond 64 bits: no size, count or seed can use one (torch cannot)."""
    if isinstance(node, dict):
        for key, value in node.items():
            check_integers(value, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for value in node:
            check_integers(value, where)
    elif isinstance(node, int) and not -(2**63) <= node < 2**63:
        raise UserError(f"{where}={node} is impossible: it does not fit in 64 bits")


def check_limits(
    config: dict[str, Any], limits: list[tuple[str, Callable[[Any], bool], str]]
) -> None:
    for key, test, requirement in limits:
        value = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or isinstance(value, bool):
            continue
        try:
            possible = test(value)
        except TypeError:  # a value of another kind than the setting takes (a list for a number)
            possible = False
        if not possible:
            raise UserError(f"{key}={value} is impossible: it must be {requirement}")


def validate_input_shape(shape: Any) -> tuple[int, ...]:
    """One input's shape from a tool's config (input_shape=[C,H,W]), as a tuple of sizes ≥ 1."""
    if not (
        isinstance(shape, (list, tuple))
        and 1 <= len(shape) <= 3
        and all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 16384 for n in shape)
    ):
        raise UserError(
            f"input_shape={shape!r} should be one input's [C,H,W]: up to three sizes from 1 to "
            f"16384 (MNIST: [1,28,28], AlexNet: [3,224,224])"
        )
    return tuple(shape)


def locate(key: str, node: dict[str, Any]) -> Callable:
    target = node.get("_target_")
    try:
        return get_object(target)
    except Exception:
        raise UserError(
            f"{key}._target_={target!r} cannot be imported; check the name in configs/{key}/"
        ) from None


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
            known = [
                p for p in parameters if p not in runtime and p not in ("self", "args", "kwargs")
            ]
            close = difflib.get_close_matches(name, known, n=2, cutoff=0.65)
            hint = f" (did you mean {' or '.join(f'{key}.{c}' for c in close)}?)" if close else ""
            raise UserError(
                f"{key}.{name} is not a setting of {key} ({target.__name__}){hint}; "
                f"its settings: {', '.join(known)}"
            )
        if name in hints and not matches(value, hints[name]):
            raise UserError(
                f"{key}.{name}={value!r} has the wrong type: expected {describe(hints[name])}"
            )


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
        value_hint = args[1] if len(args) == 2 else typing.Any
        return isinstance(value, dict) and all(matches(item, value_hint) for item in value.values())
    if inspect.isclass(hint):
        return isinstance(value, hint)
    return True  # a hint this checker does not know: let the component judge


def describe(hint: Any) -> str:
    """A type hint in words a student reads: 'float', 'int or None', 'one of stop, skip'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(
            describe(arg) for arg in args if getattr(arg, "__name__", "") != "Tensor"
        )
    if origin is typing.Literal:
        return "one of " + ", ".join(str(arg) for arg in dict.fromkeys(str(a) for a in args))
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {describe(args[0])}" if args else "a list"
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))
