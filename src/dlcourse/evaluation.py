"""Evaluation shared by the trainer and dlcourse-eval: metrics as sums, divided once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from dlcourse.data.batches import Batch
from dlcourse.distributed import SingleProcess
from dlcourse.tasks import Task


@torch.no_grad()
def evaluate(
    model: nn.Module, loss_fn: nn.Module, batches: Iterable[Batch], task: Task,
    device: torch.device, dtype: torch.dtype | None = None, processes: SingleProcess = SingleProcess(),
) -> dict[str, float]:
    """Loss, task metrics and baselines over `batches`: summed over batches, divided once."""
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for batch in batches:
        inputs, targets, *context = batch = tuple(t.to(device, non_blocking=True) for t in batch)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = model(inputs, *context)
            loss = loss_fn(outputs, targets, *context)
        accumulate(sums, batch_sums(loss, outputs, batch, task))
        for name, prediction in task.baselines(inputs, targets, *context).items():
            baseline_sums = task.batch_sums(prediction, targets, *context)
            accumulate(sums, {f"baseline_{name}/{key}": value for key, value in baseline_sums.items()})
        count += len(outputs)
    sums, count = processes.all_reduce_sums(sums, count)  # each rank saw its own shard
    return {name: value.item() / count for name, value in sums.items()}


def batch_sums(loss: torch.Tensor, outputs: torch.Tensor, batch: Batch, task: Task) -> dict[str, torch.Tensor]:
    """One batch's loss and metrics as sums; the loss is a batch mean, so times the batch size."""
    _, targets, *context = batch
    sums = {"loss": loss.detach().float() * len(outputs)}
    return sums | task.batch_sums(outputs.detach(), targets, *context)


def add_steps(sums: dict[str, torch.Tensor], steps: Sequence[tuple[torch.Tensor, torch.Tensor, Batch]], task: Task) -> int:
    """Add training steps' `(loss, outputs, (targets, *context))` to `sums`; return their sample count.

    The losses one by one, in order, so that a resumed run sums them exactly as an uninterrupted
    one; the task's metrics over all the steps' outputs at once. Why several steps at once:
    summing loss and accuracy right after each optimizer step costs a bare loop over a linear
    model 8-18 % on a 2-core CPU (scripts/bench.py); in windows of 8 to 32 steps, 4-6 % (measured
    side by side once). Counts such as accuracy are exact in any grouping; float sums such as
    inpainting's MSE may differ in the last bits after a resume mid-epoch.
    """
    losses, outputs, labels = zip(*steps)
    if "loss" not in sums:  # a fresh epoch
        sums["loss"] = torch.zeros((), device=losses[0].device)
    for loss, batch_outputs in zip(losses, outputs):
        sums["loss"].add_(loss, alpha=len(batch_outputs))  # the batch mean times its size
    targets_and_context = [torch.cat(column) for column in zip(*labels)]
    accumulate(sums, task.batch_sums(torch.cat(outputs), *targets_and_context))
    return sum(len(batch_outputs) for batch_outputs in outputs)


def accumulate(sums: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
    """Add a batch's sums into the running ones, in place (no new tensor per step)."""
    for name, value in batch.items():
        if name in sums:
            sums[name].add_(value)
        else:
            sums[name] = value.clone()  # owned: a batch's tensor may be a view of something else


def format_metrics(metrics: dict[str, float]) -> str:
    """One readable log line: losses and metrics, then the epoch's speed when it is there."""
    text = "  ".join(f"{name}={value:.4f}" for name, value in metrics.items() if not name.startswith("time/"))
    if "time/epoch_seconds" in metrics:
        text += f"  ({metrics['time/epoch_seconds']:.1f}s, {metrics['time/samples_per_second']:.0f} samples/s)"
    return text
