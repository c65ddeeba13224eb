"""Compare autograd's gradients with numerical ones (central differences, float64).

    dlcourse-gradcheck model=mlp loss=cross_entropy
    dlcourse-gradcheck model=cnn model.batch_norm=true elements_per_parameter=50
    dlcourse-gradcheck model=conv_inpaint loss=pixel_mse
    dlcourse-gradcheck ~model +model._target_=my_package.MyNet +model.width=32   # your own module

For every parameter, a random sample of its elements is nudged by ±epsilon and the loss
measured: (L(θ + ε) − L(θ − ε)) / 2ε should match autograd's ∂L/∂θ. Prints each parameter's
largest relative error and PASS / FAIL; exits 1 on any FAIL. An element passes when its
relative error is within `tolerance`, or its absolute error within `atol` plus what float64
central differences cannot resolve (rounding leaves ≈ 100 · 2.2e-16 · |L| / ε). From Python:
`gradient_check(model, loss_fn, example_batch(model, (1, 28, 28)))`.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from dlcourse.config import build, config_dir, fill_model_sizes, to_plain_dict
from dlcourse.errors import UserError, exit_on_user_error
from dlcourse.schema import at_least, between, check_limits, validate_config, validate_input_shape

Batch = tuple[torch.Tensor, ...]
# configs/gradcheck.yaml's own settings: what each must be.
CHECK_LIMITS = [
    ("num_classes", at_least(1), "at least 1"),
    ("batch_size", at_least(1), "at least 1"),
    ("elements_per_parameter", at_least(1), "at least 1"),
    ("epsilon", between(0, 1), "between 0 and 1"),
    ("tolerance", between(0, 1), "between 0 and 1"),
    ("atol", at_least(0), "0 or more"),
    ("seed", lambda value: 0 <= value < 2**63, "between 0 and 2**63 - 1"),
]


def available_memory() -> float:
    """Bytes this machine can still give (MemAvailable), or infinity where it does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return math.inf


def check_batch_fits(batch_size: int, input_shape: Sequence[int]) -> None:
    """Refuse, before allocating it, a batch this machine's memory cannot hold: its inputs in
    float32 and their float64 copy (the forward pass needs more still). Allocating it would
    fail, or, where Linux overcommits memory, get the process killed."""
    needed = batch_size * math.prod(input_shape) * (4 + 8)
    available = available_memory()
    if needed > available:
        raise UserError(out_of_memory_message(batch_size, needed, available))


def out_of_memory_message(batch_size: int, needed: float | None, available: float) -> str:
    free = f"{available / 2**30:.3g} GiB" if math.isfinite(available) else "what is"
    tried = f"about {needed / 2**30:.3g} GiB for its inputs alone, " if needed else ""
    return (
        f"batch_size={batch_size} needs {tried}more memory than {free} free here; lower "
        "batch_size (a gradient check needs only a few samples: the default is 4)"
    )


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an allocation failed: MemoryError, torch's OutOfMemoryError, or the RuntimeError
    a CPU allocator raises ("DefaultCPUAllocator: can't allocate memory")."""
    text = str(error).lower()
    return isinstance(error, MemoryError | torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("allocate" in text or "out of memory" in text)
    )


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
) -> list[ParameterCheck]:
    """Autograd against central differences, in float64, for a sample of each parameter's
    elements."""
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
        for name, parameter in model.named_parameters():
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


def report(checks: list[ParameterCheck], tolerance: float, atol: float) -> bool:
    """Print one row per parameter; True when every one passes."""
    width = max(len(check.name) for check in checks)
    print(
        f"{'parameter':<{width}}  {'shape':<18} {'checked':>7}  {'max |grad|':>10}  "
        f"{'max rel error':>13}  {'max abs error':>13}  {'kinks':>5}  result"
    )
    for check in checks:
        print(
            f"{check.name:<{width}}  {str(check.shape):<18} {check.checked:>7}  "
            f"{check.largest_gradient:>10.3e}  {check.relative_error:>13.3e}  "
            f"{check.absolute_error:>13.3e}  {check.kinks:>5}  "
            f"{'PASS' if check.passed else 'FAIL'}"
        )
    failed = [check.name for check in checks if not check.passed]
    used = checks[0].atol_used
    print(
        f"{len(checks) - len(failed)} of {len(checks)} parameters PASS (tolerance {tolerance:g} "
        f"relative, or {used:.2g} absolute: atol {atol:g} + float64 rounding {used - atol:.2g})"
        + (f"; FAIL: {', '.join(failed)}" if failed else "")
    )
    return not failed


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="gradcheck")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config = to_plain_dict(cfg)
    check_limits(config, CHECK_LIMITS)
    fill_model_sizes(cfg.model, validate_input_shape(config["input_shape"]), cfg.num_classes)
    validate_config(to_plain_dict(cfg), groups=("model", "loss"))
    check_batch_fits(cfg.batch_size, cfg.input_shape)
    torch.manual_seed(cfg.seed)  # the same initial weights on every run
    model, loss_fn = build(cfg, "model"), build(cfg, "loss")
    try:
        batch = example_batch(model, cfg.input_shape, cfg.batch_size, cfg.num_classes, cfg.seed)
        # fmt: off
        checks = gradient_check(model, loss_fn, batch, cfg.elements_per_parameter, cfg.epsilon,
                                cfg.seed, cfg.tolerance, cfg.atol)
        # fmt: on
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        raise UserError(out_of_memory_message(cfg.batch_size, None, available_memory())) from None
    if not report(checks, cfg.tolerance, cfg.atol):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
