"""The one training loop: sample batch → forward → backward → optimizer step, then evaluate.

A plain class with no callbacks or hooks. To change what a run does, edit these methods.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from dlcourse.checkpoint import BEST, FORMAT_VERSION, LAST, load_checkpoint, rng_states, set_rng_states
from dlcourse.data.batches import Batch, Batches, DataSplits
from dlcourse.distributed import SingleProcess, unwrap
from dlcourse.evaluation import add_steps, evaluate, format_metrics
from dlcourse.errors import UserError
from dlcourse.interrupt import NoStopSignal, StopSignal, TrainingInterrupted
from dlcourse.loggers import Logger
from dlcourse.pictures import model_pictures
from dlcourse.run_files import RunFiles
from dlcourse.runtime import autocast_dtype
from dlcourse.schedulers import Scheduler
from dlcourse.settings import TrainerSettings

log = logging.getLogger(__name__)

METRIC_WINDOW = 16  # steps whose training metrics are summed together (see evaluation.add_steps)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Scheduler | None,
        data: DataSplits,
        logger: Logger,
        settings: TrainerSettings,
        device: torch.device,
        files: RunFiles,
        config: dict[str, Any],
        stop_signal: StopSignal | NoStopSignal = NoStopSignal(),
        processes: SingleProcess = SingleProcess(),
    ) -> None:
        """`model` may be wrapped in DistributedDataParallel; `processes` says which rank this is.
        No optimizer and scheduler: a model without trainable parameters, for `fit_without_gradients`."""
        self.model, self.raw_model, self.loss_fn, self.data = model, unwrap(model), loss_fn, data
        self.optimizer, self.scheduler = optimizer, scheduler
        self.logger, self.settings, self.device = logger, settings, device
        self.files, self.config, self.stop_signal, self.processes = files, config, stop_signal, processes
        self.checkpoint_dir = files.checkpoint_dir
        # The first test batch, fixed: pictured at every evaluation (confusion matrix, mistakes, ...).
        self.picture_batch = tuple(t.to(device) for t in next(iter(data.test)))
        self.dtype = autocast_dtype(str(settings.precision), device)
        # float16 gradients underflow without loss scaling; with bf16 or float32 it stays off.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        # In float32, a no-op context: cheaper per step than a disabled torch.autocast.
        self.autocast = partial(torch.autocast, device.type, dtype=self.dtype) if self.dtype else nullcontext
        self.show_progress = sys.stderr.isatty() if settings.progress_bar is None else settings.progress_bar
        # Where the run is; all of it goes into checkpoints so that a resumed run continues exactly.
        self.epoch, self.batch_in_epoch, self.step = 1, 0, 0
        self.epoch_sums: dict[str, torch.Tensor] = {}
        self.epoch_count = 0
        self.pending: list[tuple[torch.Tensor, torch.Tensor, Batch]] = []  # (loss, outputs, (targets, *context))
        self.checked_step = 0  # the last step whose loss was seen to be finite
        self.nonfinite_steps = 0
        self.seconds_before = 0.0  # training time spent before a resume
        self.best: dict[str, Any] = {"value": None, "epoch": 0, "metrics": {}}

    def fit(self) -> dict[str, float]:
        """Train until `epochs`, validating and checkpointing; then test the best weights."""
        start = time.perf_counter() - self.seconds_before
        train_metrics: dict[str, float] = {}
        for epoch in range(self.epoch, self.settings.epochs + 1):
            self.epoch = epoch
            train_metrics = self.train_one_epoch(epoch)
            val_metrics = self.validate_if_due(epoch)
            self.seconds_before = time.perf_counter() - start
            self.epoch = epoch + 1  # this epoch is done
            if val_metrics and self.is_improvement(val_metrics):
                self.best = {"value": val_metrics[self.monitor], "epoch": epoch, "metrics": val_metrics}
                self.save_checkpoint(BEST, {**train_metrics, **val_metrics})
            self.save_checkpoint(LAST, {**train_metrics, **val_metrics})
            epoch_metrics = {k: v for k, v in {**train_metrics, **val_metrics}.items() if "baseline" not in k}
            log.info("epoch %d/%d  %s", epoch, self.settings.epochs, format_metrics(epoch_metrics))
        train_metrics = {k: v for k, v in train_metrics.items() if not k.startswith("time/")}
        return {**train_metrics, **self.best["metrics"], **self.test_best(),
                "best_epoch": self.best["epoch"], "epochs": self.settings.epochs, "steps": self.step,
                "nonfinite_steps": self.nonfinite_steps, "train_seconds": time.perf_counter() - start}

    def fit_without_gradients(self) -> dict[str, float]:
        """Classical methods (template matching, nearest neighbours): one pass over the training
        data fits them, with no gradient step; then they are validated and tested like any model."""
        start = time.perf_counter()
        self.raw_model.fit(self.data.train)
        val_metrics = self.validate_if_due(self.settings.epochs)
        self.best = {"value": val_metrics[self.monitor], "epoch": 0, "metrics": val_metrics}
        self.save_checkpoint(BEST, val_metrics)
        log.info("fitted in one pass, without gradients  %s", format_metrics(val_metrics))
        return {**val_metrics, **self.test_best(), "best_epoch": 0, "epochs": 0, "steps": 0,
                "train_seconds": time.perf_counter() - start}

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        if self.batch_in_epoch == 0:  # a fresh epoch (not one resumed part-way)
            self.epoch_sums, self.epoch_count = {}, 0
        self.data.train.set_epoch(epoch, start_batch=self.batch_in_epoch)
        total = min(len(self.data.train), self.settings.limit_train_batches or math.inf) - self.batch_in_epoch
        bar = tqdm(self.data.train, total=total, desc=f"epoch {epoch}", unit="batch",
                   leave=False, disable=not self.show_progress)
        start, samples = time.perf_counter(), 0
        for _, batch in zip(range(total), bar):
            batch = self.to_device(batch)
            loss, outputs = self.train_step(batch)
            self.step, self.batch_in_epoch = self.step + 1, self.batch_in_epoch + 1
            samples += len(outputs)
            if loss is not None:  # None: a non-finite loss skipped with on_nonfinite=skip
                self.pending.append((loss.detach(), outputs.detach(), batch[1:]))  # (targets, *context)
            if len(self.pending) == METRIC_WINDOW:
                self.sum_pending_metrics()
            if self.step % self.settings.log_every_n_steps == 0:
                self.log_step(loss, bar)
            if self.settings.histogram_every_n_steps and self.step % self.settings.histogram_every_n_steps == 0:
                self.logger.log_histograms(self.raw_model, self.step)  # the gradients of this step
            # Every rank must stop at the same step: agree on whether any got a signal.
            signal_number = self.processes.agree_on_signal(self.stop_signal.received or 0, self.step)
            if signal_number:
                self.stop(signal_number)
        self.sum_pending_metrics()
        seconds = time.perf_counter() - start
        self.batch_in_epoch = 0  # the epoch's batches are done
        sums, count = self.processes.all_reduce_sums(self.epoch_sums, self.epoch_count)
        metrics = {f"train/{name}": value.item() / max(count, 1) for name, value in sums.items()}
        self.check_finite(metrics.get("train/loss", 0.0))
        metrics |= {"time/epoch_seconds": seconds, "time/samples_per_second": samples * self.processes.world_size / seconds}
        if self.settings.on_nonfinite == "skip":
            metrics["train/nonfinite_steps"] = self.nonfinite_steps
        self.logger.log_scalars({k: v for k, v in metrics.items() if k != "train/loss"}, self.step)
        return metrics

    def sum_pending_metrics(self) -> None:
        """Add the steps queued since the last call to the epoch's sums (see `add_steps`: why queue)."""
        if self.pending:
            self.epoch_count += add_steps(self.epoch_sums, self.pending, self.data.task)
            self.pending.clear()

    def to_device(self, batch: Batch) -> Batch:
        """Copy a batch to the device (asynchronously from pinned memory; a no-op when it is
        there already), in the model's memory layout."""
        layout = torch.channels_last if self.settings.channels_last else torch.preserve_format
        return tuple(t.to(self.device, non_blocking=True, memory_format=layout) if t.dim() == 4
                     else t.to(self.device, non_blocking=True) for t in batch)

    def train_step(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One optimizer step on one batch; returns the (device) loss and the model's outputs."""
        inputs, targets, *context = batch  # context: e.g. an inpainting mask
        with self.autocast():
            outputs = self.model(inputs, *context)
            loss = self.loss_fn(outputs, targets, *context)
        if self.settings.on_nonfinite == "skip" and not torch.isfinite(loss):  # syncs: only in this mode
            self.nonfinite_steps += 1
            self.scheduler.step()  # keep the schedule aligned with the batches
            return None, outputs
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
        """Loss and task metrics over a split, tagged with the split: val/acc, test/mse_hole, ...

        Baselines keep their own prefix (baseline_meanfill/mse_hole on the test split,
        val_baseline_meanfill/mse_hole on the validation split).
        """
        limit = self.settings.limit_eval_batches or len(batches)
        batches = (batch for _, batch in zip(range(limit), batches))
        # The bare model: DDP's forward would sync buffers, and ranks may hold one batch more or less.
        metrics = evaluate(self.raw_model, self.loss_fn, batches, self.data.task, self.device, self.dtype, self.processes)
        baseline_prefix = "" if split == "test" else f"{split}_"
        return {(baseline_prefix + name if "/" in name else f"{split}/{name}"): value for name, value in metrics.items()}

    def validate_if_due(self, epoch: int) -> dict[str, float]:
        if epoch % self.settings.eval_every_n_epochs and epoch != self.settings.epochs:
            return {}
        val_metrics = self.evaluate(self.data.val, "val")
        self.logger.log_scalars(val_metrics, self.step)
        if self.settings.test_curve:  # for plots only: test/* still come once, from the best checkpoint
            test_metrics = self.evaluate(self.data.test, "test")
            curve = {k.replace("test/", "test_curve/"): v for k, v in test_metrics.items() if k.startswith("test/")}
            self.logger.log_scalars(curve, self.step)
        self.log_pictures()
        if self.settings.histogram_every_n_steps is None:
            self.logger.log_histograms(self.raw_model, self.step)  # with the epoch's last gradients
        return val_metrics

    def log_pictures(self, save: bool = False) -> None:
        """What the first layer learned and what the model does with the fixed test batch, to
        TensorBoard (and as PNGs if `save`)."""
        inputs, _, *context = self.picture_batch
        pictures = model_pictures(self.raw_model, inputs, *context) | self.data.task.pictures(self.raw_model, self.picture_batch)
        for name, image in pictures.items():
            self.logger.log_image(f"pictures/{name}", image, self.step)
            if save:
                self.files.save_image(name, image)

    def test_best(self) -> dict[str, float]:
        """Test once, with the weights that validated best (those saved in best.pt)."""
        self.processes.barrier()  # rank 0 has finished writing best.pt
        self.stop_signal.final_test = (str(self.checkpoint_dir / BEST), self.step)  # nothing left to save
        best = load_checkpoint(self.checkpoint_dir / BEST, map_location=self.device)
        self.raw_model.load_state_dict(best["model"])
        self.processes.check_in_sync(self.raw_model)
        test_metrics = self.evaluate(self.data.test, "test")
        self.logger.log_scalars(test_metrics, self.step)
        self.log_pictures(save=True)
        log.info("test (best epoch %d)  %s", self.best["epoch"], format_metrics(test_metrics))
        return test_metrics

    def log_step(self, loss: torch.Tensor | None, bar: tqdm) -> None:
        # The only host synchronisation inside an epoch: reading the loss to log it.
        self.sum_pending_metrics()
        sums, count = self.processes.all_reduce_sums(self.epoch_sums, self.epoch_count)
        running_loss = sums["loss"].item() / max(count, 1) if sums else 0.0
        self.check_finite(running_loss)
        loss_value = loss.item() if loss is not None else math.nan
        self.logger.log_scalars({"train/loss": loss_value, "lr": self.learning_rate}, self.step)
        bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)

    def check_finite(self, running_loss: float) -> None:
        """Stop with a clear message once the loss is nan or inf (the last checkpoint stays good)."""
        if not math.isfinite(running_loss):
            raise UserError(
                f"the training loss became {running_loss} in epoch {self.epoch}, between steps "
                f"{self.checked_step + 1} and {self.step}, at learning rate {self.learning_rate:.3g}. "
                f"Training stopped; the last good checkpoint is {self.checkpoint_dir / LAST} if one "
                f"was written. Try a lower optimizer.lr, trainer.grad_clip=1.0, or "
                f"trainer.on_nonfinite=skip to skip such steps"
            )
        self.checked_step = self.step

    def stop(self, signal_number: int) -> None:
        """Save where the run is, mid-epoch, and leave the loop."""
        path = self.checkpoint_dir / LAST
        self.save_checkpoint(LAST, {})
        raise TrainingInterrupted(signal_number, str(path), self.step)

    @property
    def monitor(self) -> str:
        return f"val/{self.data.task.monitor}"

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"] if self.optimizer else 0.0

    def is_improvement(self, val_metrics: dict[str, float]) -> bool:
        value, best = val_metrics[self.monitor], self.best["value"]
        return best is None or (value > best if self.data.task.mode == "max" else value < best)

    def save_checkpoint(self, name: str, metrics: dict[str, float]) -> None:
        # The epoch's partial sums over all ranks, so that any number of processes can resume.
        self.sum_pending_metrics()
        epoch_sums, epoch_count = self.processes.all_reduce_sums(self.epoch_sums, self.epoch_count)
        self.files.save_checkpoint(name, {
            "format_version": FORMAT_VERSION,
            "task": self.data.task.name,
            "input_shape": list(self.picture_batch[0].shape[1:]),  # one input's (C, H, W)
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},  # none: a classical method
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,  # the epoch to run next, or the one in progress
            "batch_in_epoch": self.batch_in_epoch,  # batches of it already done
            "step": self.step,
            "epoch_sums": epoch_sums,
            "epoch_count": epoch_count,
            "nonfinite_steps": self.nonfinite_steps,
            "train_seconds": self.seconds_before,
            "sampler": {"seed": getattr(self.data.train, "seed", None), "epoch": self.epoch},
            "rng": rng_states(),
            "metrics": metrics,
            "best": self.best,
            "config": self.config,
        })

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint exactly where it was written."""
        self.raw_model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.batch_in_epoch = checkpoint["epoch"], checkpoint["batch_in_epoch"]
        self.step = self.checked_step = checkpoint["step"]
        # The saved partial sums cover every rank: rank 0 carries them on, the others start at 0.
        share = 1.0 if self.processes.is_main else 0.0
        self.epoch_sums = {k: v.to(self.device) * share for k, v in checkpoint["epoch_sums"].items()}
        self.epoch_count = checkpoint["epoch_count"] if self.processes.is_main else 0
        self.nonfinite_steps = checkpoint["nonfinite_steps"]
        self.seconds_before, self.best = checkpoint["train_seconds"], checkpoint["best"]
        set_rng_states(checkpoint["rng"])

