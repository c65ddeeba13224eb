"""What a tensor read from a file must be before dlcourse uses it, and how a saved state
differs in form from the state of a freshly built object.

`torch.load(weights_only=True)` runs no code, but it still loads tensors that dlcourse-train
never writes (meta, sparse, expand()ed) and states of any shape: checked here, they are refused
in one line; unchecked, they would fail mid-run, far from the file that caused it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dlcourse.infrastructure.errors import UserError, printable


def check_weights(weights: Any, path: Path) -> None:
    if not isinstance(weights, dict) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor)
        for name, tensor in weights.items()
    ):
        raise UserError(
            f"{path} is not a dlcourse checkpoint: its model is not a mapping of names to tensors"
        )
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(
                f"{path} holds NaN or infinite weights ({name}); a model with them predicts "
                "nothing meaningful. Use a checkpoint from before the loss diverged"
            )


def check_tensors(checkpoint: dict[str, Any], path: Path) -> None:
    """Every tensor anywhere in the file must be of the kind dlcourse-train writes: dense, with
    values, not quantized, no two of its elements in one place, all inside the data stored for
    it. Other kinds load with weights_only=True and fail later: a meta or sparse weight when it
    is used, an expand()ed momentum buffer at the first in-place update, mid-run."""
    for place, tensor in tensors_in(checkpoint):
        problem = tensor_problem(tensor)
        if problem:
            raise UserError(
                f"refused {path}: its {printable(place)[:120]} is {problem}, which "
                "dlcourse-train never writes. Load only checkpoints written by dlcourse-train"
            )


def tensors_in(data: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts, lists and tuples, with its place (`model.head.weight`).
    Each container is visited once: a pickle can hold a list inside itself."""
    seen, pending = set(), [("", data)]
    while pending:
        place, node = pending.pop()
        if isinstance(node, torch.Tensor):
            yield place, node
        elif isinstance(node, (dict, list, tuple)) and id(node) not in seen:
            seen.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            pending += [(f"{place}.{key}" if place else str(key), value) for key, value in items]


def tensor_problem(tensor: torch.Tensor) -> str | None:
    """What makes `tensor` unlike those dlcourse-train writes, or None."""
    if tensor.is_nested:
        return "a nested tensor"
    if tensor.layout != torch.strided:
        return f"a sparse tensor ({str(tensor.layout).removeprefix('torch.')})"
    if tensor.is_meta:
        return "a meta tensor (a shape without values)"
    if tensor.is_quantized:
        return "a quantized tensor"
    if tensor.numel() == 0:
        return None
    if overlapping(tensor):
        return "a tensor whose elements share memory (a stride of 0, as expand() makes)"
    last = tensor.storage_offset() + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride()))
    if (last + 1) * tensor.element_size() > tensor.untyped_storage().nbytes():
        return "a tensor larger than the data stored for it"
    return None


def overlapping(tensor: torch.Tensor) -> bool:
    """Whether two indices of `tensor` reach one element. Taken from the smallest stride up,
    each dimension (of size > 1) must step past everything the smaller ones reach; a stride of
    0 (expand) or strides that interleave (as_strided) do not."""
    reach = 0
    for stride, size in sorted((s, n) for n, s in zip(tensor.shape, tensor.stride()) if n > 1):
        if stride <= reach:
            return True
        reach += (size - 1) * stride
    return False


def is_number(value: Any) -> bool:
    return type(value) in (int, float)


def is_metrics(value: Any) -> bool:
    """Metrics by name, as the trainer keeps them (nan allowed: a metric may be undefined)."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and is_number(v) for k, v in value.items()
    )


def structure_misfit(fresh: Any, saved: Any, place: str = "") -> str | None:
    """Where `saved` differs in form from `fresh`, the state of a freshly built object of this
    run: another type, other keys, another length, a tensor of another shape or kind of number,
    or not finite. Numbers may differ in value; strings may not (they name behaviour, such as
    OneCycleLR's anneal strategy). None when they have one form."""
    where = place or "the top level"
    if isinstance(fresh, (dict, list, tuple)):
        return container_misfit(fresh, saved, place)
    if isinstance(fresh, bool) or fresh is None:
        fits = type(saved) is type(fresh)
    elif is_number(fresh):
        fits = is_number(saved) and math.isfinite(saved)
    elif isinstance(fresh, str):
        fits = saved == fresh
    elif isinstance(fresh, torch.Tensor):
        fits = isinstance(saved, torch.Tensor) and saved.shape == fresh.shape
        fits = fits and number_kind(saved) == number_kind(fresh) and tensor_finite(saved)
    else:
        fits = type(saved) is type(fresh)
    return None if fits else f"{where} is {described(saved)}, not {described(fresh)}"


def container_misfit(fresh: Any, saved: Any, place: str) -> str | None:
    """`structure_misfit` of a dict (the same keys) or a list or tuple (the same length)."""
    where = place or "the top level"
    if isinstance(fresh, dict):
        if not isinstance(saved, dict) or set(saved) != set(fresh):
            return f"{where} is {described(saved)}, not {described(fresh)}"
        pairs = [(f"{place}.{key}" if place else str(key), fresh[key], saved[key]) for key in fresh]
    else:
        if not isinstance(saved, (list, tuple)) or len(saved) != len(fresh):
            return f"{where} is {described(saved)}, not {described(fresh)}"
        pairs = [(f"{place}[{i}]", f, s) for i, (f, s) in enumerate(zip(fresh, saved))]
    for inner, fresh_value, saved_value in pairs:
        problem = structure_misfit(fresh_value, saved_value, inner)
        if problem:
            return problem
    return None


def tensor_finite(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())


def described(value: Any) -> str:
    """A short description of a value in a message: its type, and its shape or keys."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    if isinstance(value, dict):
        keys = ", ".join(printable(str(k))[:30] for k in list(value)[:6])
        return f"a mapping of {{{keys}{', ...' if len(value) > 6 else ''}}}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


def weights_misfit(
    expected: dict[str, torch.Tensor], stored: dict[str, torch.Tensor]
) -> str | None:
    """The first way `stored` weights do not fit a model whose own state is `expected`: a name
    only one has, another shape, or another kind of number (complex or integer values where the
    model holds floats: loading would drop or round them silently). None when they fit."""
    names = sorted(set(expected).symmetric_difference(stored))
    if names:
        return printable(names[0])[:120]
    for name, tensor in expected.items():
        weights = stored[name]
        # An empty tensor is sized by what is loaded (nearest neighbours' memory).
        if tensor.numel() and tensor.shape != weights.shape:
            return f"{name} is {list(weights.shape)}, the model's {list(tensor.shape)}"
        if number_kind(tensor) != number_kind(weights):
            return f"{name} holds {weights.dtype} values, the model {tensor.dtype}"
    return None


def number_kind(tensor: torch.Tensor) -> str:
    """Which kind of number a tensor holds: float widths convert without surprise, kinds do not."""
    if tensor.is_complex():
        return "complex"
    return "float" if tensor.is_floating_point() else "integer"
