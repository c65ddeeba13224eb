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

import math
import sys

import hydra
import torch
from omegaconf import DictConfig

from dlcourse.course.gradient_check import ParameterCheck, example_batch, gradient_check
from dlcourse.infrastructure.config import build, config_dir, fill_model_sizes, to_plain_dict
from dlcourse.infrastructure.errors import UserError, exit_on_user_error
from dlcourse.infrastructure.runtime import (
    available_memory,
    check_batch_fits,
    is_out_of_memory,
    out_of_memory_message,
)
from dlcourse.infrastructure.schema import (
    at_least,
    between,
    check_limits,
    validate_config,
    validate_input_shape,
)

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
    # What numerical differentiation costs: two forward passes (L(θ + ε), L(θ − ε)) per entry.
    sampled = sum(check.checked for check in checks)
    every = sum(math.prod(check.shape) for check in checks)
    print(
        f"Cost: {2 * sampled:,} forward passes for these {sampled:,} entries; all {every:,} "
        f"parameters would take {2 * every:,}. Autograd gave every gradient in one forward and "
        "one backward pass."
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
                                cfg.seed, cfg.tolerance, cfg.atol, progress=show_progress)
        # fmt: on
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        raise UserError(out_of_memory_message(cfg.batch_size, None, available_memory())) from None
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)  # the progress line gives way to the table
    if not report(checks, cfg.tolerance, cfg.atol):
        raise SystemExit(1)


def show_progress(line: str) -> None:
    """On a terminal, one line rewritten in place; elsewhere (a log, a pipe) a line each."""
    if sys.stderr.isatty():
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
