"""The training state a checkpoint holds to continue a run where it stopped, and the checks
that it can: `check_resumable` (its parts are there, of the types dlcourse-train writes) and
`check_training_state` (they fit this run's freshly built model, optimizer, scheduler and scaler),
both before any training step.
"""

from __future__ import annotations

import inspect
import math
import random
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcourse.infrastructure.errors import UserError, printable
from dlcourse.infrastructure.tensor_checks import (
    described,
    is_metrics,
    is_number,
    number_kind,
    structure_misfit,
    weights_misfit,
)


@dataclass
class Position:
    """Where a run is. With the states of the model, optimizer, scheduler, loss scaler and random
    generators, and the epoch's partial metric sums, what a checkpoint needs to continue there."""

    epoch: int = 1  # the epoch to run next, or the one in progress
    batch_in_epoch: int = 0  # batches of it already done
    step: int = 0  # optimizer steps so far
    nonfinite_steps: int = 0  # steps skipped for a nan / inf loss (trainer.on_nonfinite=skip)
    train_seconds: float = 0.0  # training time so far
    evaluations_without_improvement: int = 0  # for early stopping (trainer.early_stopping)
    history: list[dict[str, float]] = field(default_factory=list)  # each epoch's metrics
    best: dict[str, Any] = field(default_factory=lambda: {"value": None, "epoch": 0, "metrics": {}})


# The types of the position's fields (a float may have been saved as an int).
POSITION_TYPES: dict[str, type | tuple[type, ...]] = {
    name: (int, float) if hint is float else typing.get_origin(hint) or hint
    for name, hint in typing.get_type_hints(Position).items()
}
# Those a checkpoint may lack: written by later versions, they start from their defaults.
ADDED_LATER = ("evaluations_without_improvement", "history")
# What a checkpoint must hold, and of which type, to continue training from it.
RESUME_FIELDS: dict[str, type | tuple[type, ...]] = {
    **{name: kind for name, kind in POSITION_TYPES.items() if name not in ADDED_LATER},
    "epoch_count": int,
    "epoch_sums": dict,
    "optimizer": dict,
    "scheduler": dict,
    "scaler": dict,
    "rng": dict,
}


def check_resumable(checkpoint: dict[str, Any], path: Path) -> None:
    """Refuse, in one line, a checkpoint that lacks part of the training state."""
    for name, kind in RESUME_FIELDS.items():
        value = checkpoint.get(name)
        if (
            not isinstance(value, kind)
            or isinstance(value, bool)
            or (isinstance(value, int) and value < 0)
        ):
            raise UserError(
                f"{path} cannot be resumed: its {name!r} is missing or not what dlcourse-train "
                "writes. Resume from a checkpoints/last.pt written by dlcourse-train"
            )
    if checkpoint["epoch"] < 1:
        raise UserError(f"{path} cannot be resumed: its epoch is {checkpoint['epoch']}")
    for name in ADDED_LATER:
        if name in checkpoint and not isinstance(checkpoint[name], POSITION_TYPES[name]):
            raise UserError(
                f"{path} cannot be resumed: its {name!r} is not what dlcourse-train writes"
            )
    problem = position_problem(checkpoint)
    if problem:
        raise UserError(
            f"{path} cannot be resumed: its {problem} is not what dlcourse-train writes. Resume "
            "from a checkpoints/last.pt written by dlcourse-train"
        )


def position_problem(checkpoint: dict[str, Any]) -> str | None:
    """The first part of a checkpoint's position (best result, history, the epoch's partial
    sums, the generators) that has the right type but not the contents the trainer reads, or
    None. Found now, it is one line; found by the trainer, it would stop the run mid-epoch."""
    best = checkpoint["best"]
    if not (
        set(best) == {"value", "epoch", "metrics"}
        and (best["value"] is None or (is_number(best["value"]) and math.isfinite(best["value"])))
        and type(best["epoch"]) is int
        and best["epoch"] >= 0
        and is_metrics(best["metrics"])
    ):
        return "'best' (value, epoch and metrics)"
    if not all(is_metrics(entry) for entry in checkpoint.get("history", [])):
        return "'history' (a list of metrics by name)"
    for name, value in checkpoint["epoch_sums"].items():
        if not (
            isinstance(name, str)
            and isinstance(value, torch.Tensor)
            and value.dim() == 0
            and number_kind(value) != "complex"
            and value.dtype != torch.bool
            and torch.isfinite(value)
        ):
            return f"'epoch_sums' ({printable(str(name))[:60]}: one finite number a metric)"
    return rng_problem(checkpoint["rng"])


def rng_problem(states: dict[str, Any]) -> str | None:
    """What in a checkpoint's generator states `set_rng_states` could not take, or None."""
    if not {"python", "torch"} <= set(states) <= {"python", "torch", "numpy", "cuda"}:
        return "'rng' (the generators python, torch and numpy)"
    python = states["python"]
    if not (
        isinstance(python, (list, tuple))
        and len(python) == 3
        and type(python[0]) is int
        and isinstance(python[1], (list, tuple))
        and len(python[1]) == 625
        and all(type(v) is int and 0 <= v < 2**32 for v in python[1])
        and (python[2] is None or type(python[2]) is float)
    ):
        return "'rng' state of Python's generator"
    fresh = rng_states()
    for name in ("torch", "numpy"):
        if name in states and name in fresh and structure_misfit(fresh[name], states[name]):
            return f"'rng' state of the {name} generator"
    cuda = states.get("cuda", [])
    if not isinstance(cuda, (list, tuple)) or not all(
        isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1 for t in cuda
    ):
        return "'rng' state of the CUDA generators"
    return None


def check_training_state(
    checkpoint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
    path: Path,
) -> None:
    """Refuse, before any training step, a training state that this run's freshly built model,
    optimizer, scheduler and loss scaler could not continue from. Each is compared with their
    own state; the optimizer's per-parameter buffers with what one step of the same optimizer
    keeps, sized like their parameter (see `optimizer_misfit`)."""
    checks = {"model": lambda: weights_misfit(model.state_dict(), checkpoint["model"])}
    if optimizer is not None:
        checks["optimizer"] = lambda: optimizer_misfit(optimizer, checkpoint["optimizer"])
        checks["scheduler"] = lambda: scheduler_misfit(scheduler, checkpoint["scheduler"])
        checks["scaler"] = lambda: structure_misfit(scaler.state_dict(), checkpoint["scaler"])
    for part, check in checks.items():
        problem = check()
        if problem:
            raise UserError(
                f"{path} cannot be resumed: its {part} state does not fit this run ({problem}). "
                "Resume from a checkpoints/last.pt that dlcourse-train wrote for this run"
            )


def optimizer_misfit(optimizer: torch.optim.Optimizer, saved: Any) -> str | None:
    """How a saved optimizer state differs from what `optimizer` (freshly built) can continue
    from: its settings by group, the parameters in order, and each parameter's buffers."""
    fresh = optimizer.state_dict()  # its state is empty: the buffers are compared below
    outline = {**saved, "state": {}} if isinstance(saved, dict) and "state" in saved else saved
    problem = structure_misfit(fresh, outline)
    if problem:
        return problem
    if [g["params"] for g in saved["param_groups"]] != [g["params"] for g in fresh["param_groups"]]:
        return "param_groups name other parameters than the model's, in another order"
    if not isinstance(saved["state"], dict):
        return f"state is {described(saved['state'])}, not a mapping"
    parameters = [(p, index) for index, g in enumerate(optimizer.param_groups) for p in g["params"]]
    for key, entry in saved["state"].items():
        if type(key) is not int or not 0 <= key < len(parameters):
            return f"state holds parameter {printable(str(key))[:30]}, which the model lacks"
        parameter, group = parameters[key]
        expected = dict(probe_state(optimizer, group))
        for name, value in expected.items():
            if isinstance(value, torch.Tensor) and value.shape == (2,):  # sized like the probe
                expected[name] = parameter.detach()
        problem = structure_misfit(expected, entry, f"state.{key}")
        if problem:
            return problem
    return None


def probe_state(optimizer: torch.optim.Optimizer, group: int) -> dict[str, Any]:
    """What one step of an optimizer of `optimizer`'s class, with its `group`'s settings, keeps
    for a parameter of shape (2,) (momentum buffers, step counts, ...)."""
    settings = optimizer.param_groups[group]
    accepted = inspect.signature(type(optimizer)).parameters
    like = settings["params"][0]
    parameter = torch.zeros(2, dtype=like.dtype, device=like.device, requires_grad=True)
    probe = type(optimizer)(
        [parameter], **{k: v for k, v in settings.items() if k in accepted and k != "params"}
    )
    parameter.grad = torch.ones_like(parameter)
    probe.step()
    return probe.state[parameter]


def scheduler_misfit(scheduler: Any, saved: Any) -> str | None:
    """`structure_misfit` of a scheduler's state; a OneCycleLR's must also cover this run (it
    refuses to step past its total_steps, and would stop the run there)."""
    fresh = scheduler.state_dict()
    problem = structure_misfit(fresh, saved)
    if problem or "total_steps" not in fresh:
        return problem
    if saved["last_epoch"] > saved["total_steps"] or saved["total_steps"] < fresh["total_steps"]:
        return (
            f"its schedule is {saved['total_steps']} steps long (at step {saved['last_epoch']}); "
            f"this run takes {fresh['total_steps']}"
        )
    return None


def rng_states() -> dict[str, Any]:
    """Every generator a run draws from, in forms that `weights_only=True` can read back."""
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        name, keys, position, has_gauss, cached = numpy.random.get_state()
        states["numpy"] = [
            name,
            torch.from_numpy(keys.astype("int64")),
            position,
            has_gauss,
            cached,
        ]
    except ImportError:
        pass
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy

        name, keys, position, has_gauss, cached = states["numpy"]
        numpy.random.set_state((name, keys.numpy().astype("uint32"), position, has_gauss, cached))
