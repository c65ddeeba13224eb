"""Custom losses, metrics and schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from dlcourse import schedulers
from dlcourse.losses import OneHotMSELoss
from dlcourse.tasks import ClassificationTask


def test_one_hot_mse_is_half_squared_distance_averaged_over_the_batch():
    outputs = torch.tensor([[0.5, 0.2, 0.0], [1.0, 1.0, 1.0]])
    targets = torch.tensor([0, 2])
    # sample 1: ½((0.5−1)² + 0.2² + 0²) = ½(0.25 + 0.04) = 0.145; sample 2: ½(1 + 1 + 0) = 1.0
    loss = OneHotMSELoss(num_classes=3)(outputs, targets)
    assert loss.item() == pytest.approx((0.145 + 1.0) / 2)


def test_one_hot_mse_matches_torch_mse_loss():
    outputs = torch.randn(8, 10)
    targets = torch.randint(0, 10, (8,))
    reference = (
        0.5
        * 10
        * torch.nn.functional.mse_loss(outputs, torch.nn.functional.one_hot(targets, 10).float())
    )
    torch.testing.assert_close(OneHotMSELoss(10)(outputs, targets), reference)


def test_accuracy_counts_correct_predictions():
    outputs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    sums = ClassificationTask(list("0123456789")).batch_sums(outputs, torch.tensor([0, 0, 0]))
    assert sums["acc"].item() == 2


def learning_rates(builder, steps: int, lr: float = 0.1, **settings) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = builder(optimizer, total_steps=steps, steps_per_epoch=10, **settings)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_constant_schedule_keeps_the_rate():
    assert learning_rates(schedulers.constant, 30) == [0.1] * 30


def test_step_schedule_decays_every_step_epochs():
    rates = learning_rates(schedulers.step, 30, step_epochs=1.0, gamma=0.5)
    assert rates[0] == rates[9] == pytest.approx(0.1)
    assert rates[10] == pytest.approx(0.05) and rates[20] == pytest.approx(0.025)


def test_cosine_schedule_reaches_min_lr_at_the_end():
    rates = learning_rates(schedulers.cosine, 100, min_lr=0.001)
    assert rates[0] == pytest.approx(0.1)
    assert rates[50] == pytest.approx(0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi / 2)) / 2)
    assert rates[-1] < 0.0011


def test_onecycle_peaks_at_max_lr_after_warmup():
    rates = learning_rates(schedulers.onecycle, 100, max_lr=0.5, pct_start=0.25)
    peak = max(range(100), key=rates.__getitem__)
    assert rates[peak] == pytest.approx(0.5) and 23 <= peak <= 25
    assert rates[0] < 0.05 and rates[-1] < 1e-3
