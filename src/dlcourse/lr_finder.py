"""The learning-rate finder (Smith 2015, as fastai has it): train from fresh weights with a
learning rate that grows exponentially each step, record the loss, stop once it blows up, and
suggest a rate by one of fastai's rules: `steep` (where the loss falls fastest) or `valley`
(halfway down its longest fall); configs/lr_find.yaml says which, and why.

    dlcourse-lr-find experiment=fast_mlp_mnist     # dlcourse/commands/lr_find.py

The model and optimizer are the run's own (momentum, weight decay and all); nothing is saved
but the curve: the weights it leaves have seen rates far too large.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from dlcourse.data.batches import Batch, Batches, to_device

SMOOTHING = 0.98  # the loss's exponential moving average, debiased (fastai's)


@dataclass
class LearningRateCurve:
    """The rates tried, the loss at each (raw and smoothed), and the suggested rate."""

    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestions: dict[str, float | None] = field(default_factory=dict)  # by each rule of RULES
    suggestion: float | None = None  # by the rule asked for
    stopped_because: str = "reached the last rate"


def exponential_rates(start: float, end: float, steps: int) -> list[float]:
    return [start * (end / start) ** (step / max(steps - 1, 1)) for step in range(steps)]


def find_learning_rate(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    device: torch.device,
    rates: list[float],
    stop_factor: float,
    rule: str,
) -> LearningRateCurve:
    """One optimizer step at each rate of `rates`, on the training batches in order (again from
    the first when they run out); stops when the smoothed loss exceeds `stop_factor` times its
    least value, or is not finite."""
    curve, average = LearningRateCurve(), 0.0
    model.train()
    for step, (rate, batch) in enumerate(zip(rates, endless(batches)), start=1):
        for group in optimizer.param_groups:
            group["lr"] = rate
        inputs, targets, *context = to_device(batch, device)
        loss = loss_fn(model(inputs, *context), targets, *context)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING**step)
        curve.learning_rates.append(rate)
        curve.losses.append(value)
        curve.smoothed.append(smoothed)
        if not math.isfinite(smoothed):
            curve.stopped_because = f"the loss became {smoothed} at lr {rate:.3g}"
            break
        if smoothed > stop_factor * min(curve.smoothed):
            curve.stopped_because = f"the loss passed {stop_factor:g}× its least value"
            break
    curve.suggestions = {
        name: rule(curve.learning_rates, curve.smoothed) for name, rule in RULES.items()
    }
    curve.suggestion = curve.suggestions[rule]
    return curve


def endless(batches: Batches) -> Iterator[Batch]:
    while True:
        yield from batches


def kept(rates: list[float], losses: list[float]) -> list[tuple[float, float]]:
    """As fastai, the first tenth and the last 5 steps are left out (the start is noise, the end
    already diverging), and so are non-finite losses."""
    skip = len(rates) // 10
    return [(r, v) for r, v in list(zip(rates, losses))[skip:-5] if math.isfinite(v)]


def steep(rates: list[float], losses: list[float]) -> float | None:
    """fastai's `steep`: the rate where the loss falls fastest against log(rate)."""
    pairs = kept(rates, losses)
    if len(pairs) < 3:
        return None
    slopes = [
        (v1 - v0) / (math.log(r1) - math.log(r0)) for (r0, v0), (r1, v1) in zip(pairs, pairs[1:])
    ]
    steepest = min(range(len(slopes)), key=slopes.__getitem__)
    return pairs[steepest][0] if slopes[steepest] < 0 else None


def valley(rates: list[float], losses: list[float]) -> float | None:
    """fastai's `valley` (fastai/callback/schedule.py): the longest stretch over which the loss
    keeps falling (its longest decreasing subsequence), and the rate halfway into it — past the
    flat start, clear of the blow-up."""
    pairs = kept(rates, losses)
    if len(pairs) < 3:
        return None
    losses = [loss for _, loss in pairs]
    length = [1] * len(losses)  # length[i]: the longest fall that ends at i
    best_end = 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and length[i] < length[j] + 1:
                length[i] = length[j] + 1
        if length[i] > length[best_end]:
            best_end = i
    if length[best_end] < 2:  # the loss never fell
        return None
    start = best_end - length[best_end]
    section = (best_end - start) / 3
    return pairs[max(0, start + int(section) + int(section / 2))][0]


RULES = {"valley": valley, "steep": steep}  # lr_find.rule picks the one that is suggested
