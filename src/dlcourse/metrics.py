"""Metrics as sums over samples, divided once: an epoch's training metrics, and the measurement
of a split (shared by the trainer and dlcourse-eval).

Names follow one scheme: `<split>/<metric>` for the model (`train/loss`, `val/acc`,
`test/mse_hole`), and `baselines/<split>/<baseline>/<metric>` for the non-learned methods
measured on the same images (`baselines/test/meanfill/mse_hole`). (TensorBoard shows them
laid out for its first screen: see dlcourse.infrastructure.loggers.placement.)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import torch
from torch import nn

from dlcourse.data.batches import Batch
from dlcourse.infrastructure.distributed import SingleProcess
from dlcourse.tasks import NoReview, Review, Task

METRIC_WINDOW = 16  # training steps whose metrics are summed at once (see TrainingMetrics)


def tag(split: str, name: str, baseline: str | None = None) -> str:
    """The name a metric is logged and saved under (see the module's docstring)."""
    if baseline is None:
        return f"{split}/{name}"
    return f"baselines/{split}/{baseline}/{name}"


class TrainingMetrics:
    """The running epoch's training loss and task metrics, as sums over its samples.

    `add` queues each step's (detached) loss and outputs, and every `window` steps they are
    summed at once. Why not right after each step: small ops per step are a visible share of a
    small model's step on a CPU, and summing in windows costs less (scripts/bench.py measures
    it: docs/benchmarks.md, trainer overhead). The losses are still added one by one, in order,
    so that a resumed run sums them exactly as an uninterrupted one; counts such as accuracy are
    exact in any grouping (float sums such as inpainting's MSE may differ in the last bits after
    a resume mid-epoch).
    """

    def __init__(self, task: Task, window: int = METRIC_WINDOW) -> None:
        self.task = task
        self.window = window
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.queued: list[tuple[torch.Tensor, torch.Tensor, Batch]] = []  # (loss, outputs, labels)

    def reset(self, sums: dict[str, torch.Tensor] | None = None, count: int = 0) -> None:
        """Start an epoch: from zero, or from a checkpoint's partial sums."""
        self.sums = dict(sums or {})
        self.count = count
        self.queued = []

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, labels: Batch) -> None:
        """One step's loss (its batch mean), outputs and (targets, *context)."""
        self.queued.append((loss.detach(), outputs.detach(), labels))
        if len(self.queued) == self.window:
            self.sum_queued()

    def totals(self) -> tuple[dict[str, torch.Tensor], int]:
        """The sums so far (on the device) and the number of samples they cover."""
        self.sum_queued()
        return self.sums, self.count

    def sum_queued(self) -> None:
        if not self.queued:
            return
        losses, outputs, labels = zip(*self.queued)
        if "loss" not in self.sums:
            self.sums["loss"] = torch.zeros((), device=losses[0].device)
        for loss, batch_outputs in zip(losses, outputs):
            self.sums["loss"].add_(loss, alpha=len(batch_outputs))  # the batch mean times its size
        targets_and_context = [torch.cat(column) for column in zip(*labels)]
        accumulate(self.sums, self.task.batch_sums(torch.cat(outputs), *targets_and_context))
        self.count += sum(len(batch_outputs) for batch_outputs in outputs)
        self.queued.clear()


@torch.no_grad()
def measure(
    model: nn.Module,
    loss_fn: nn.Module,
    batches: Iterable[Batch],
    task: Task,
    split: str,
    device: torch.device,
    dtype: torch.dtype | None = None,
    processes: SingleProcess = SingleProcess(),
    review: Review = NoReview(),
) -> tuple[dict[str, float], dict[str, float]]:
    """The model's loss and task metrics over a split's batches, and its baselines' metrics,
    tagged with the split: summed over batches, divided once. `review` sees every batch's
    outputs too (the task's confusion matrix and worst errors)."""
    model.eval()
    model_sums: dict[str, torch.Tensor] = {}
    baseline_sums: dict[str, torch.Tensor] = {}
    count = 0
    for batch in batches:
        inputs, targets, *context = batch = tuple(t.to(device, non_blocking=True) for t in batch)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = model(inputs, *context)
            loss = loss_fn(outputs, targets, *context)
        review.add(outputs, batch)
        sums = {"loss": loss.float() * len(outputs), **task.batch_sums(outputs, targets, *context)}
        accumulate(model_sums, {tag(split, name): value for name, value in sums.items()})
        for baseline, prediction in task.baselines(inputs, targets, *context).items():
            sums = task.batch_sums(prediction, targets, *context)
            accumulate(baseline_sums, {tag(split, name, baseline): v for name, v in sums.items()})
        count += len(outputs)
    return averages(model_sums, count, processes), averages(baseline_sums, count, processes)


def averages(
    sums: dict[str, torch.Tensor], count: int, processes: SingleProcess
) -> dict[str, float]:
    """Sums over every rank's shard, divided once by the number of samples."""
    sums, count = processes.all_reduce_sums(sums, count)
    return {name: value.item() / count for name, value in sums.items()}


def accumulate(sums: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
    """Add a batch's sums into the running ones, in place (no new tensor per step)."""
    for name, value in batch.items():
        if name in sums:
            sums[name].add_(value)
        else:
            sums[name] = value.clone()  # owned: a batch's tensor may be a view of something else


def format_metrics(metrics: dict[str, float], shown: Collection[str] | None = None) -> str:
    """One readable log line, grouped by split (and baseline): `train loss=0.3 acc=0.91 | val
    loss=0.29 acc=0.92`, then the epoch's speed when it is there. `shown`: the metric names
    to print (the rest are in TensorBoard and metrics.json), so that a task with many
    metrics (inpainting's) still fits a line."""
    groups: dict[str, list[str]] = {}
    for name, value in metrics.items():
        *group, metric = name.split("/")
        if group == ["time"] or (shown is not None and metric not in shown):
            continue
        key = group[-1] if group[:1] == ["baselines"] else "/".join(group)  # its baseline
        groups.setdefault(key, []).append(f"{metric}={value:.4g}")
    text = " | ".join(f"{key} {' '.join(values)}" for key, values in groups.items())
    if "time/epoch_seconds" in metrics:
        seconds, speed = metrics["time/epoch_seconds"], metrics["time/samples_per_second"]
        text += f"  ({seconds:.1f}s, {speed:.0f} samples/s)"
    return text
