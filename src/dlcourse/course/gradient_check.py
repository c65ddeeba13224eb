"""Gradient checking, as the lecture does it: autograd's gradients against numerical ones
(central differences, in float64).

    checks = gradient_check(model, loss_fn, example_batch(model, (1, 28, 28)))  # dlcourse-gradcheck

For every parameter, a random sample of its elements is nudged by ±epsilon and the loss
measured: (L(θ + ε) − L(θ − ε)) / 2ε should match autograd's ∂L/∂θ. An element passes when its
relative error is within `tolerance`, or its absolute error within `atol` plus what float64
central differences cannot resolve (rounding leaves ≈ 100 · 2.2e-16 · |L| / ε).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.runtime import (
    available_memory,
    is_out_of_memory,
    out_of_memory_message,
)

Batch = tuple[torch.Tensor, ...]


def example_batch(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 4,
    num_classes: int = 10,
    seed: int = 0,
) -> Batch:
    """A random batch shaped like the data: (images, labels) for a classifier, or
    (masked, complete, mask) for a model whose forward also takes a mask (inpainting)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, *input_shape, generator=generator)
    if len(inspect.signature(model.forward).parameters) == 1:
        return images, torch.randint(0, num_classes, (batch_size,), generator=generator)
    mask = (torch.rand(batch_size, 1, *input_shape[1:], generator=generator) < 0.3).float()
    return images * (1 - mask), images, mask


@dataclass
class ParameterCheck:
    name: str
    shape: tuple[int, ...]
    checked: int  # elements compared
    largest_gradient: float
    relative_error: float  # the largest over the checked elements
    absolute_error: float
    passed: (
        bool  # every checked element within tolerance (relative) or atol (absolute), or at a kink
    )
    kinks: int  # elements where ±epsilon crossed a kink (see `judge`)
    atol_used: float = 0.0  # the absolute error allowed: atol + float64 rounding at this epsilon


def gradient_check(
    model: nn.Module,
    loss_fn: nn.Module,
    batch: Batch,
    elements_per_parameter: int = 20,
    epsilon: float = 1e-6,
    seed: int = 0,
    tolerance: float = 1e-5,
    atol: float = 1e-8,
    progress: Callable[[str], None] = lambda line: None,
) -> list[ParameterCheck]:
    """Autograd against central differences, in float64, for a sample of each parameter's
    elements. `progress` is told of each parameter as its check starts (dlcourse-gradcheck
    prints it: a big model takes minutes)."""
    if not any(p.requires_grad for p in model.parameters()):
        name = type(model).__name__
        raise UserError(f"{name} has no trainable parameters: there is no gradient to check")
    model, loss_fn = model.double(), loss_fn.double()
    inputs, targets, *context = (t.double() if t.is_floating_point() else t for t in batch)
    model.train()

    def loss() -> torch.Tensor:
        # Re-seeded before every forward pass: dropout draws the same mask each time, so the
        # numerical gradient differentiates the very function autograd does.
        torch.manual_seed(seed)
        return loss_fn(model(inputs, *context), targets, *context)

    backward_once(loss, model, loss_fn, inputs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        loss_zero = loss().item()
        atol = atol + rounding_allowance(model, loss_zero, epsilon)
        checks = []
        parameters = list(model.named_parameters())
        for number, (name, parameter) in enumerate(parameters, start=1):
            count = min(elements_per_parameter, parameter.numel())
            progress(
                f"checking {number}/{len(parameters)}: {name}, {count} entries (2 passes each)"
            )
            flat = parameter.view(-1)
            indices = torch.randperm(flat.numel(), generator=generator)[:elements_per_parameter]
            quotients = partial(differences, loss, epsilon=epsilon, loss_zero=loss_zero)
            checks.append(check_parameter(name, parameter, indices, quotients, tolerance, atol))
    return checks


# The rounding allowance may be at most this share of the largest gradient: then an error of
# 1 % in any entry at least 1 % the size of the largest one is larger than the allowance.
ROUNDING_SHARE = 1e-4


def rounding_allowance(model: nn.Module, loss_zero: float, epsilon: float) -> float:
    """How far float64 rounding alone can move a difference quotient at this step: each of
    L(θ ± ε) is off by a few ulps of |L|, divided by 2ε. A step so small that this allowance
    could hide a wrong gradient (more than 1e-4 of the largest one) is refused, not used."""
    rounding = 100 * torch.finfo(torch.float64).eps * abs(loss_zero) / epsilon
    largest = max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)
    if rounding > ROUNDING_SHARE * largest:
        raise UserError(
            f"epsilon={epsilon:g} is too small for this loss: float64 rounding in L(θ ± ε) alone "
            f"moves a difference quotient by about {rounding:.1e}, more than {ROUNDING_SHARE:g} of "
            f"the largest gradient ({largest:.1e}), so a wrong gradient could pass unseen. Use a "
            f"larger epsilon (1e-6, the default, or up to 1e-4)"
        )
    return rounding


def backward_once(
    loss: Callable[[], torch.Tensor], model: nn.Module, loss_fn: nn.Module, inputs: torch.Tensor
) -> None:
    """Autograd's gradients into each parameter's .grad (one line if the batch does not fit)."""
    model.zero_grad(set_to_none=True)
    try:
        loss().backward()
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        if is_out_of_memory(error):
            raise UserError(out_of_memory_message(len(inputs), None, available_memory())) from None
        raise UserError(
            f"{type(model).__name__} with {type(loss_fn).__name__} cannot take a batch of inputs "
            f"shaped {tuple(inputs.shape[1:])}: {str(error).splitlines()[0]}. Set "
            "input_shape=[C,H,W] for the model (AlexNet: [3,224,224]) and a loss made for it "
            "(loss=pixel_mse for inpainting models)"
        ) from None


def check_parameter(
    name: str,
    parameter: torch.Tensor,
    indices: torch.Tensor,
    quotients: Callable[[torch.Tensor, int], tuple[float, float, float]],
    tolerance: float,
    atol: float,
) -> ParameterCheck:
    """Judge the sampled entries of one parameter (see `judge`); `quotients(flat, index)` gives
    an entry's central, right and left difference quotients."""
    flat, analytic = parameter.view(-1), parameter.grad.view(-1)
    results = [
        judge(analytic[i].item(), *quotients(flat, i), tolerance, atol) for i in indices.tolist()
    ]
    relative, absolute, verdicts = zip(*results)
    return ParameterCheck(
        name,
        tuple(parameter.shape),
        checked=len(results),
        largest_gradient=analytic[indices].abs().max().item(),
        relative_error=max(relative),
        absolute_error=max(absolute),
        passed="fail" not in verdicts,
        kinks=verdicts.count("kink"),
        atol_used=atol,
    )


def differences(
    loss: Callable[[], torch.Tensor],
    flat: torch.Tensor,
    index: int,
    epsilon: float,
    loss_zero: float,
) -> tuple[float, float, float]:
    """The central, right and left difference quotients of the loss in one parameter entry."""
    original = flat[index].item()
    flat[index] = original + epsilon
    plus = loss().item()
    flat[index] = original - epsilon
    minus = loss().item()
    flat[index] = original
    return (
        (plus - minus) / (2 * epsilon),
        (plus - loss_zero) / epsilon,
        (loss_zero - minus) / epsilon,
    )


def judge(
    exact: float, central: float, right: float, left: float, tolerance: float, atol: float
) -> tuple[float, float, str]:
    """(relative error, absolute error, "pass" | "kink" | "fail") for one entry.

    A kink within ±ε (a ReLU input crossing 0, a max-pool tie changing hands) makes the central
    difference the average of two different slopes, while autograd gives the slope on one side.
    So where the two one-sided slopes differ, the entry passes if autograd matches one of them
    (to 1e-3: one-sided differences are only first-order accurate).
    """
    error = abs(exact - central)
    relative = error / max(abs(exact) + abs(central), 1e-12)
    if relative <= tolerance or error <= atol:
        return relative, error, "pass"
    one_sided = min(abs(exact - right), abs(exact - left))
    if one_sided <= 1e-3 * abs(exact) + atol and abs(right - left) > 10 * one_sided:
        return relative, error, "kink"
    return relative, error, "fail"
