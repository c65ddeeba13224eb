"""Per-task metrics as sums over a batch, so train and eval add them up and divide once."""

from __future__ import annotations

from typing import Protocol

import torch


class TaskMetrics(Protocol):
    """A task's metrics: `batch_sums` returns per-batch sums; the trainer divides by the count."""

    monitor: str  # the validation metric that picks the best checkpoint, e.g. "acc"
    mode: str  # "max" or "min": which direction of `monitor` is better

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]: ...


class ClassificationMetrics:
    """Accuracy as the number of correct predictions, which the trainer turns into a fraction."""

    monitor = "acc"
    mode = "max"

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"acc": (outputs.argmax(dim=1) == targets).sum()}
