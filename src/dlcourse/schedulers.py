"""Learning-rate schedules, all stepped once per optimizer step.

Every builder takes the optimizer and the run's length in steps (known only at run time, so the
composition function passes them), then its own settings from `configs/scheduler/*.yaml`.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer, lr_scheduler


class Constant:
    """No schedule: the optimizer's learning rate, unchanged, behind a scheduler's interface.

    Why not torch's `ConstantLR`: stepping it, and the call counter it wraps around
    `optimizer.step`, is a measurable share of a linear model's step on a CPU (scripts/bench.py).
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer

    def step(self) -> None:
        pass

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


Scheduler = lr_scheduler.LRScheduler | Constant  # what the trainer steps


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> Constant:
    """Keep the optimizer's learning rate."""
    return Constant(optimizer)


def step(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    step_epochs: float = 1.0,
    gamma: float = 0.7,
) -> lr_scheduler.LRScheduler:
    """Multiply the learning rate by `gamma` every `step_epochs` epochs."""
    step_size = max(1, round(step_epochs * steps_per_epoch))
    return lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def cosine(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, min_lr: float = 0.0
) -> lr_scheduler.LRScheduler:
    """Anneal from the optimizer's learning rate to `min_lr` along half a cosine over the run."""
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=min_lr)


def onecycle(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    max_lr: float = 0.1,
    pct_start: float = 0.25,
) -> lr_scheduler.LRScheduler:
    """Warm up to `max_lr` over the first `pct_start` of the run, then anneal to near zero."""
    if math.isclose(pct_start * total_steps, 1.0):
        # torch's OneCycleLR divides by the warm-up's length minus one step: a run of exactly
        # 1 / pct_start steps (a short smoke run) gets a step and a half of warm-up instead.
        pct_start = 1.5 / total_steps
    return lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start
    )
