"""The one training loop: sample batch → forward → backward → optimizer step, then evaluate.

A plain class with no callbacks or hooks. To change what a run does, edit these methods.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from dlcourse.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from dlcourse.data.batches import Batch, Batches, DataSplits
from dlcourse.loggers import Logger
from dlcourse.metrics import TaskMetrics
from dlcourse.runtime import autocast_dtype
from dlcourse.schedulers import LRScheduler

log = logging.getLogger(__name__)


@dataclass
class TrainerSettings:
    """The `trainer:` config group (configs/trainer/default.yaml documents each field)."""

    epochs: int = 5
    device: str = "auto"
    precision: str = "32"
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    log_every_n_steps: int = 50
    eval_every_n_epochs: int = 1
    progress_bar: bool | None = None  # None: only when stderr is a terminal


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: LRScheduler,
        data: DataSplits,
        logger: Logger,
        settings: TrainerSettings,
        device: torch.device,
        checkpoint_dir: Path,
        config: dict[str, Any],
    ) -> None:
        self.model, self.loss_fn, self.data = model, loss_fn, data
        self.optimizer, self.scheduler = optimizer, scheduler
        self.logger, self.settings, self.device = logger, settings, device
        self.checkpoint_dir, self.config = Path(checkpoint_dir), config
        self.dtype = autocast_dtype(str(settings.precision), device)
        # float16 gradients underflow without loss scaling; with bf16 or float32 it stays off.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.show_progress = sys.stderr.isatty() if settings.progress_bar is None else settings.progress_bar
        self.step = 0
        self.best_value: float | None = None
        self.best_epoch = 0
        self.best_val_metrics: dict[str, float] = {}

    def fit(self) -> dict[str, float]:
        """Train for `epochs`, validating and checkpointing; then test the best weights."""
        start = time.perf_counter()
        train_metrics: dict[str, float] = {}
        for epoch in range(1, self.settings.epochs + 1):
            train_metrics = self.train_one_epoch(epoch)
            val_metrics = {}
            if epoch % self.settings.eval_every_n_epochs == 0 or epoch == self.settings.epochs:
                val_metrics = self.evaluate(self.data.val, "val")
                self.logger.log_scalars(val_metrics, self.step)
                if self.is_improvement(val_metrics):
                    self.best_value, self.best_epoch = val_metrics[self.monitor], epoch
                    self.best_val_metrics = val_metrics
                    self.save_checkpoint("best.pt", epoch, {**train_metrics, **val_metrics})
            self.save_checkpoint("last.pt", epoch, {**train_metrics, **val_metrics})
            log.info("epoch %d/%d  %s", epoch, self.settings.epochs, format_metrics({**train_metrics, **val_metrics}))
        train_seconds = time.perf_counter() - start

        # Test once, with the weights that validated best (those saved in best.pt).
        best = load_checkpoint(self.checkpoint_dir / "best.pt", map_location=self.device)
        self.model.load_state_dict(best["model"])
        test_metrics = self.evaluate(self.data.test, "test")
        self.logger.log_scalars(test_metrics, self.step)
        log.info("test (best epoch %d)  %s", self.best_epoch, format_metrics(test_metrics))
        return {
            **{k: v for k, v in train_metrics.items() if k.startswith("train/")},
            **self.best_val_metrics,
            **test_metrics,
            "best_epoch": self.best_epoch,
            "epochs": self.settings.epochs,
            "steps": self.step,
            "train_seconds": train_seconds,
        }

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.data.train.set_epoch(epoch)
        batches, total = self.limited(self.data.train, self.settings.limit_train_batches)
        bar = tqdm(batches, total=total, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not self.show_progress)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        start = time.perf_counter()
        for batch in bar:
            inputs, targets = (t.to(self.device, non_blocking=True) for t in batch)
            loss, outputs = self.train_step(inputs, targets)
            self.step += 1
            accumulate(sums, batch_sums(loss, outputs, targets, self.data.metrics))
            count += targets.shape[0]
            if self.step % self.settings.log_every_n_steps == 0:
                # The only host synchronisation inside the epoch: reading the loss to log it.
                loss_value = loss.item()
                self.logger.log_scalars({"train/loss": loss_value, "lr": self.learning_rate}, self.step)
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        seconds = time.perf_counter() - start
        metrics = {f"train/{name}": value.item() / count for name, value in sums.items()}
        metrics |= {"time/epoch_seconds": seconds, "time/samples_per_second": count / seconds}
        self.logger.log_scalars({k: v for k, v in metrics.items() if k != "train/loss"}, self.step)
        return metrics

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on one batch; returns the (device) loss and the model's outputs."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            outputs = self.model(inputs)
            loss = self.loss_fn(outputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss, outputs

    def evaluate(self, batches: Batches, split: str) -> dict[str, float]:
        """Loss and task metrics over a split, tagged with the split's name (val/acc, ...)."""
        batches, _ = self.limited(batches, self.settings.limit_eval_batches)
        metrics = evaluate(self.model, self.loss_fn, batches, self.data.metrics, self.device, self.dtype)
        return {f"{split}/{name}": value for name, value in metrics.items()}

    @property
    def monitor(self) -> str:
        return f"val/{self.data.metrics.monitor}"

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def is_improvement(self, val_metrics: dict[str, float]) -> bool:
        value = val_metrics[self.monitor]
        if self.best_value is None:
            return True
        return value > self.best_value if self.data.metrics.mode == "max" else value < self.best_value

    def save_checkpoint(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        checkpoint = {
            "format_version": FORMAT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "metrics": metrics,
            "best": {"monitor": self.monitor, "value": self.best_value, "epoch": self.best_epoch},
            "config": self.config,
        }
        save_checkpoint(checkpoint, self.checkpoint_dir / name)

    @staticmethod
    def limited(batches: Batches, limit: int | None):
        """The batches, cut to `limit` when set (for quick runs); also how many there will be."""
        if limit is None:
            return batches, len(batches)
        return itertools.islice(batches, limit), min(limit, len(batches))


@torch.no_grad()
def evaluate(
    model: nn.Module, loss_fn: nn.Module, batches: Iterable[Batch], metrics: TaskMetrics,
    device: torch.device, dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Loss and task metrics of `model` over `batches`: summed over batches, divided once."""
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for batch in batches:
        inputs, targets = (t.to(device, non_blocking=True) for t in batch)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = model(inputs)
            loss = loss_fn(outputs, targets)
        accumulate(sums, batch_sums(loss, outputs, targets, metrics))
        count += targets.shape[0]
    return {name: value.item() / count for name, value in sums.items()}


def batch_sums(
    loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, metrics: TaskMetrics
) -> dict[str, torch.Tensor]:
    """One batch's loss and metrics as sums; the loss is a batch mean, so times the batch size."""
    sums = {"loss": loss.detach().float() * targets.shape[0]}
    return sums | metrics.batch_sums(outputs.detach(), targets)


def accumulate(sums: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
    for name, value in batch.items():
        sums[name] = sums[name] + value if name in sums else value


def format_metrics(metrics: dict[str, float]) -> str:
    """One readable log line: losses and metrics, then the epoch's speed when it is there."""
    text = "  ".join(f"{name}={value:.4f}" for name, value in metrics.items() if not name.startswith("time/"))
    if "time/epoch_seconds" in metrics:
        text += f"  ({metrics['time/epoch_seconds']:.1f}s, {metrics['time/samples_per_second']:.0f} samples/s)"
    return text
