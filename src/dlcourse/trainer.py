"""The one training loop: sample batch → forward → backward → optimizer step, then evaluate.

A plain class with no callbacks or hooks. To change what a run does, edit these methods.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import asdict, fields
from functools import partial
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from dlcourse.confusion import report_table
from dlcourse.data.batches import Batch, Batches, DataSplits, to_device
from dlcourse.infrastructure.checkpoint import FORMAT_VERSION, load_checkpoint, own_storage
from dlcourse.infrastructure.command_line import resume_command
from dlcourse.infrastructure.debugging import is_anomaly, step_profiler
from dlcourse.infrastructure.distributed import SingleProcess, unwrap
from dlcourse.infrastructure.errors import DataError, TrainingInterrupted, UserError
from dlcourse.infrastructure.files import Picture
from dlcourse.infrastructure.interrupt import NoStopSignal, StopSignal
from dlcourse.infrastructure.loggers import Logger
from dlcourse.infrastructure.run_files import RunFiles
from dlcourse.infrastructure.run_folder import BEST, LAST
from dlcourse.infrastructure.runtime import autocast_dtype
from dlcourse.infrastructure.schema import TrainerSettings
from dlcourse.infrastructure.training_state import Position, rng_states, set_rng_states
from dlcourse.metrics import TrainingMetrics, format_metrics, measure
from dlcourse.pictures.charts import curves_image
from dlcourse.pictures.learned import model_pictures
from dlcourse.schedulers import Scheduler
from dlcourse.tasks import NoReview, Review

log = logging.getLogger(__name__)


class Pruning(Protocol):
    """What the trainer asks a hyperparameter search after each evaluation (an Optuna trial,
    dlcourse.sweeps.search.Trial): stop this run now?"""

    def should_prune(self, epoch: int, val_metrics: dict[str, float]) -> bool: ...


class NeverPrune:
    """The no-op twin: a run outside a search is never pruned."""

    def should_prune(self, epoch: int, val_metrics: dict[str, float]) -> bool:
        return False


def moving_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """trainer.ema_decay: a copy of `model` that follows it, after each step, as
    w_ema ← decay · w_ema + (1 − decay) · w (buffers too). The average is what is evaluated,
    saved as the checkpoint's model and exported; decay 0: none."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


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
        trial: Pruning = NeverPrune(),
    ) -> None:
        """`model` may be DDP-wrapped; no optimizer and scheduler: a classical method. `trial`:
        what a hyperparameter search's pruner is asked after each evaluation."""
        self.model, self.raw_model = model, unwrap(model)  # the model, out of DDP's wrapper
        self.loss_fn, self.optimizer, self.scheduler = loss_fn, optimizer, scheduler
        self.data, self.logger, self.files = data, logger, files
        self.settings, self.device = settings, device  # how and where to train
        self.config, self.stop_signal, self.processes = config, stop_signal, processes
        self.trial, self.pruned_at_epoch = trial, None
        # The first test batch, fixed: pictured at every evaluation (confusion matrix, ...).
        self.picture_batch = tuple(t.to(device) for t in next(iter(data.test)))
        dtype = self.dtype = autocast_dtype(settings.precision, device)
        # float16 gradients underflow without loss scaling; with bf16 or float32 it stays off.
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        # In float32, a no-op context: cheaper per step than a disabled torch.autocast.
        self.autocast = partial(torch.autocast, device.type, dtype) if dtype else nullcontext
        progress = settings.progress_bar
        self.show_progress = sys.stderr.isatty() if progress is None else progress
        self.position = Position()  # where the run is: saved in checkpoints, with what follows
        self.train_metrics = TrainingMetrics(data.task)
        # On the console: the loss and the monitored metric (TensorBoard and metrics.json: all).
        self.shown_metrics = ("loss", data.task.monitor, "nonfinite_steps")
        self.checked_step = 0  # the last step whose loss was seen to be finite
        self.ema = moving_average(self.raw_model, settings.ema_decay) if optimizer else None
        self.profiler = step_profiler(settings.profile_steps, files.output_dir, processes.is_main)
        self.name = ""  # on the console, before its lines: a batched member's ("seed=43: ")

    def fit(self) -> dict[str, float]:
        """Train until `epochs`, validating and checkpointing; then test the best weights.
        (trainer.detect_anomaly, trainer.profile_steps look inside: debug=nan, debug=profiler.)"""
        if self.optimizer is None:
            return self.fit_without_gradients()
        try:
            anomalies = torch.autograd.set_detect_anomaly(self.settings.detect_anomaly)
            with anomalies, self.profiler.running():
                return self.fit_epochs()
        except RuntimeError as error:
            if not is_anomaly(error):
                raise
            raise self.diverged(
                f"anomaly detection: {str(error).splitlines()[0]} (the forward operation that "
                f"made it is in the warning above)"
            ) from None

    def fit_epochs(self) -> dict[str, float]:
        start = time.perf_counter() - self.position.train_seconds
        train_metrics = self.resumed_train_metrics()
        for epoch in range(self.position.epoch, self.settings.epochs + 1):
            if self.patience_ran_out():
                break
            self.position.epoch = epoch
            train_metrics = self.train_one_epoch(epoch)
            if self.end_epoch(epoch, train_metrics, start):
                break
        return self.finish(train_metrics, start)

    def resumed_train_metrics(self) -> dict[str, float]:
        """The last epoch's train/*, should none be left to train (a run resumed to finish it)."""
        last_epoch = self.position.history[-1] if self.position.history else {}
        return {k: v for k, v in last_epoch.items() if k.startswith("train/")}

    def end_epoch(self, epoch: int, train_metrics: dict[str, float], start: float) -> bool:
        """Validate (when due), checkpoint and report the epoch just trained; true: stop here
        (the search's pruner said so)."""
        val_metrics, val_baselines = self.validate_if_due(epoch)
        self.position.train_seconds = time.perf_counter() - start
        self.position.epoch = epoch + 1  # this epoch is done
        metrics = {**train_metrics, **val_metrics, **val_baselines}
        if val_metrics and self.is_improvement(val_metrics):
            self.record_best(epoch, {**val_metrics, **val_baselines})
            self.save(BEST, metrics)
        elif val_metrics:
            self.position.evaluations_without_improvement += 1
        self.position.history.append({"epoch": epoch, **train_metrics, **val_metrics})
        self.save(LAST, metrics)
        shown = format_metrics({**train_metrics, **val_metrics}, self.shown_metrics)
        log.info("%sepoch %d/%d  %s", self.name, epoch, self.settings.epochs, shown)
        return bool(val_metrics) and self.is_pruned(epoch, val_metrics)

    def finish(self, train_metrics: dict[str, float], start: float) -> dict[str, Any]:
        """After the last epoch: the curves drawn, the best weights tested; the run's results."""
        if self.position.best["value"] is None:  # a branch whose run's best.pt stayed behind
            self.record_best(self.position.epoch - 1, {**self.validate_now()})
            self.save(BEST, {})
        names = ["loss", self.data.task.monitor]  # for those who look without TensorBoard
        best_epoch = self.position.best["epoch"]
        self.files.save_image("curves", curves_image(self.position.history, names, best_epoch))
        train_metrics = {k: v for k, v in train_metrics.items() if not k.startswith("time/")}
        return self.results(train_metrics, start, self.settings.epochs, self.position.step)

    def fit_without_gradients(self) -> dict[str, float]:
        """Classical methods (template matching, nearest neighbours): one pass over the training
        data fits them, with no gradient step; then they are validated and tested like any model."""
        start = time.perf_counter()
        self.raw_model.fit(self.data.train)
        val_metrics, val_baselines = self.validate_if_due(self.settings.epochs)
        best_metrics = {**val_metrics, **val_baselines}
        self.record_best(0, best_metrics)
        self.save(BEST, best_metrics)
        shown = format_metrics(val_metrics, self.shown_metrics)
        log.info("fitted in one pass, without gradients  %s", shown)
        return self.results({}, start, epochs=0, steps=0)

    def results(self, train_metrics: dict, start: float, epochs: int, steps: int) -> dict[str, Any]:
        """What metrics.json holds: the last epoch's train/*, the best epoch's val/*, test/* of
        its weights, then how the run went and what its metrics mean."""
        return {
            **train_metrics,
            **self.position.best["metrics"],
            **self.test_best(),
            "best_epoch": self.position.best["epoch"],
            "epochs": epochs,
            "epochs_run": self.position.epoch - 1,  # fewer than `epochs` after an early stop
            "steps": steps,
            "nonfinite_steps": self.position.nonfinite_steps,
            **({"pruned_at_epoch": self.pruned_at_epoch} if self.pruned_at_epoch else {}),
            "train_seconds": time.perf_counter() - start,
            # For the readers of metrics.json (dlcourse-sweep-report): the metric that picked
            # the best checkpoint, and whether a higher value of each metric is better.
            "monitor": self.monitor,
            "higher_is_better": dict(self.data.task.higher_is_better),
            **self.data_description(),
        }

    def data_description(self) -> dict[str, Any]:
        """What the model's outputs and inputs are, for checkpoints and metrics.json: the class
        names (classification) and how a new image becomes an input (dlcourse-predict)."""
        class_names = getattr(self.data.task, "class_names", None)
        description = {"class_names": list(class_names)} if class_names else {}
        if self.data.preprocessing:
            description["preprocessing"] = self.data.preprocessing
        return description

    def record_best(self, epoch: int, metrics: dict[str, float]) -> None:
        self.position.best = {"value": metrics[self.monitor], "epoch": epoch, "metrics": metrics}
        self.position.evaluations_without_improvement = 0

    def patience_ran_out(self) -> bool:
        """Early stopping: true once the monitored metric has not improved for `patience`
        evaluations in a row (the best weights are in best.pt, and are the ones tested)."""
        patience = self.settings.early_stopping.get("patience")
        if not patience or self.position.evaluations_without_improvement < patience:
            return False
        best, epoch = self.position.best["value"], self.position.best["epoch"]
        message = (
            "early stop after epoch %d: %s not better for %d evaluations (best %.4f, epoch %d)"
        )
        log.info(message, self.position.epoch - 1, self.monitor, patience, best, epoch)
        return True

    def is_pruned(self, epoch: int, val_metrics: dict[str, float]) -> bool:
        """In a search with a pruner: rank 0 reports to the trial, and every rank stops if it is
        pruned (like an early stop: the checkpoints stay, the best weights are tested)."""
        pruned = self.processes.broadcast(
            "yes" if self.trial.should_prune(epoch, val_metrics) else ""
        )
        if pruned:
            self.pruned_at_epoch = epoch
            log.info("pruned after epoch %d: the search's pruner stops this trial", epoch)
        return bool(pruned)

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        total = self.start_epoch(epoch)
        bar = self.progress_bar(self.data.train, epoch, total)
        start, samples = time.perf_counter(), 0
        try:
            for _, batch in zip(range(total), bar):
                batch = to_device(batch, self.device, self.settings.channels_last)
                loss, outputs = self.train_step(batch)  # forward, backward, optimizer step
                samples += len(outputs)
                self.after_step(loss, outputs, batch, bar)  # metrics, logs, stop signals
        except DataError as error:  # an unreadable file: keep the work done, then say so
            raise self.saved_at_data_error(error) from None
        self.position.batch_in_epoch = 0  # the epoch's batches are done
        return self.epoch_train_metrics(samples, time.perf_counter() - start)

    def start_epoch(self, epoch: int) -> int:
        """Ready the model and the data for `epoch`; returns how many batches are left in it."""
        self.model.train()
        if self.position.batch_in_epoch == 0:  # a fresh epoch (not one resumed part-way)
            self.train_metrics.reset()
        self.data.train.set_epoch(epoch, start_batch=self.position.batch_in_epoch)
        return self.settings.train_batches(len(self.data.train)) - self.position.batch_in_epoch

    def progress_bar(self, batches: Iterable, epoch: int, total: int) -> tqdm:
        disable = not self.show_progress
        return tqdm(batches, total=total, desc=f"epoch {epoch}", unit="batch", leave=False,
                    disable=disable)  # fmt: skip

    def saved_at_data_error(self, error: DataError) -> DataError:
        self.save(LAST, {})
        return DataError(
            f"{error}; the run saved its place in {self.files.checkpoint_dir / LAST} and "
            f"continues from there with: {resume_command(self.files.output_dir)}"
        )

    def train_step(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One optimizer step on one batch; returns the (device) loss and the model's outputs."""
        inputs, targets, *context = batch  # context: e.g. an inpainting mask
        with self.autocast():
            outputs = self.model(inputs, *context)
            loss = self.loss_fn(outputs, targets, *context)
        if self.skips_nonfinite(loss):
            return None, outputs
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.optimizer_step()
        return loss, outputs

    def skips_nonfinite(self, loss: torch.Tensor) -> bool:
        """trainer.on_nonfinite=skip: a step whose loss is nan or inf is skipped (and counted)."""
        if self.settings.on_nonfinite == "skip" and not torch.isfinite(loss):  # syncs: only here
            self.position.nonfinite_steps += 1
            self.scheduler.step()  # keep the schedule aligned with the batches
            return True
        return False

    def optimizer_step(self) -> None:
        """Update the weights from their gradients (clipped if asked), then the schedule."""
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.raw_model)

    def after_step(
        self, loss: torch.Tensor | None, outputs: torch.Tensor, batch: Batch, bar: tqdm
    ) -> None:
        """Count the step, queue its metrics; every so often check and log the loss and draw
        histograms; stop (after saving) if a stop signal came."""
        self.position.step += 1
        self.position.batch_in_epoch += 1
        self.profiler.step()
        step = self.position.step
        if loss is not None:  # None: a non-finite loss skipped with on_nonfinite=skip
            self.train_metrics.add(loss, outputs, batch[1:])  # (targets, *context)
        if step % self.settings.log_every_n_steps == 0:
            self.check_loss_is_finite()
            self.log_step(loss, bar)
        every = self.settings.histogram_every_n_steps
        if every and step % every == 0:
            self.logger.log_histograms(self.raw_model, step)  # the gradients of this step
        # Every rank must stop at the same step: agree on whether any got a signal.
        signal_number = self.processes.agree_on_signal(self.stop_signal.received or 0, step)
        if signal_number:
            self.stop(signal_number)

    def epoch_train_metrics(self, samples: int, seconds: float) -> dict[str, float]:
        """The epoch's train/* metrics over every rank, and its speed; logged, and returned."""
        sums, count = self.processes.all_reduce_sums(*self.train_metrics.totals())
        metrics = {f"train/{name}": value.item() / max(count, 1) for name, value in sums.items()}
        self.check_loss_is_finite(metrics.get("train/loss", 0.0))
        metrics["time/epoch_seconds"] = seconds
        metrics["time/samples_per_second"] = samples * self.processes.world_size / seconds
        if self.settings.on_nonfinite == "skip":
            metrics["train/nonfinite_steps"] = self.position.nonfinite_steps
        self.logger.log_scalars(metrics, self.position.step)  # train/loss: the epoch's mean
        return metrics

    def evaluate(
        self, batches: Batches, split: str, review: Review = NoReview()
    ) -> tuple[dict[str, float], dict[str, float]]:
        """The model's loss and metrics over a split (val/acc, test/mse_hole, ...), and its
        baselines' (baselines/val/meanfill/mse_hole, ...): see dlcourse.metrics. `review`
        looks at every output on the way (the confusion matrix, the worst errors)."""
        limit = self.settings.eval_batches(len(batches))
        batches = (batch for _, batch in zip(range(limit), batches))
        # The bare model: DDP's forward would sync buffers, and ranks may hold a batch more or less.
        model, task, dtype = self.eval_model, self.data.task, self.dtype
        metrics = measure(
            model, self.loss_fn, batches, task, split, self.device, dtype, self.processes, review
        )
        review.merge(self.processes)
        return metrics

    def validate_if_due(self, epoch: int) -> tuple[dict[str, float], dict[str, float]]:
        if epoch % self.settings.eval_every_n_epochs and epoch != self.settings.epochs:
            return {}, {}
        self.check_weights_are_finite()
        review = self.data.task.review()
        val_metrics, val_baselines = self.evaluate(self.data.val, "val", review)
        if not math.isfinite(val_metrics["val/loss"]):
            raise self.diverged(f"the validation loss became {val_metrics['val/loss']}")
        self.logger.log_scalars({**val_metrics, **val_baselines}, self.position.step)
        if self.settings.test_curve:  # for plots; test/* still come once, from the best weights
            test_metrics, _ = self.evaluate(self.data.test, "test")
            curve = {k.replace("test/", "test_curve/"): v for k, v in test_metrics.items()}
            self.logger.log_scalars(curve, self.position.step)
        self.log_pictures(review.pictures("val"), "val")
        if self.settings.histogram_every_n_steps is None:  # with the epoch's last gradients
            self.logger.log_histograms(self.raw_model, self.position.step)
        return val_metrics, val_baselines

    def validate_now(self) -> dict[str, float]:
        val_metrics, val_baselines = self.evaluate(self.data.val, "val")
        return {**val_metrics, **val_baselines}

    def log_pictures(
        self, reviewed: dict[str, torch.Tensor], split: str, save: bool = False
    ) -> None:
        """What the first layer learned and what the model does with the fixed test batch, and
        the pictures of a split's review, to TensorBoard (and as PNGs if `save`)."""
        inputs, _, *context = self.picture_batch
        class_names = getattr(self.data.task, "class_names", None)
        pictures = model_pictures(self.eval_model, inputs, *context, class_names=class_names)
        pictures |= self.data.task.pictures(self.eval_model, self.picture_batch)
        tags = {name: f"pictures/{name}" for name in pictures}
        tags |= {name: f"pictures/{split}/{name}" for name in reviewed}
        for name, image in (pictures | reviewed).items():
            picture = Picture(image)  # encoded once, for TensorBoard and the file
            self.logger.log_image(tags[name], picture, self.position.step)
            if save:
                self.files.save_image(name, picture)

    def test_best(self) -> dict[str, float]:
        """Test once, with the weights that validated best (those saved in best.pt)."""
        self.processes.barrier()  # rank 0 has finished writing best.pt
        best_path = self.files.checkpoint_dir / BEST
        self.stop_signal.final_test = (str(best_path), self.position.step)  # nothing left to save
        best = load_checkpoint(best_path, map_location=self.device)
        self.raw_model.load_state_dict(best["model"])  # the weights run.train exports
        if self.ema is not None:  # and the average, which is what is evaluated
            self.ema.module.load_state_dict(best["model"])
        self.processes.check_in_sync(self.raw_model)
        review = self.data.task.review()
        test_metrics, test_baselines = self.evaluate(self.data.test, "test", review)
        test_metrics |= test_baselines
        self.logger.log_scalars(test_metrics, self.position.step)
        self.log_pictures(review.pictures("test"), "test", save=True)
        best_epoch = self.position.best["epoch"]
        shown = format_metrics(test_metrics, self.shown_metrics)
        # `test loss=... | <baseline> ...`
        log.info("%sbest epoch %d, %s", self.name, best_epoch, shown)
        summary = review.summary()  # per-class scores and the most confused pairs
        if summary:
            log.info("%stest set, by class:\n%s", self.name, report_table(**summary))
        return test_metrics | summary

    def log_step(self, loss: torch.Tensor | None, bar: tqdm) -> None:
        """This one step's loss as steps/loss (train/loss is the epoch's mean, logged at its
        end), and the learning rate as steps/lr."""
        loss_value = loss.item() if loss is not None else math.nan
        step_scalars = {"steps/loss": loss_value, "steps/lr": self.learning_rate}
        self.logger.log_scalars(step_scalars, self.position.step)
        bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)

    def check_loss_is_finite(self, running_loss: float | None = None) -> None:
        """Stop with a clear message once the loss is nan or inf (the last checkpoint stays good).
        Reading the running loss waits for the device, so it is done only every few steps."""
        if running_loss is None:
            sums, count = self.processes.all_reduce_sums(*self.train_metrics.totals())
            running_loss = sums["loss"].item() / max(count, 1) if sums else 0.0
        if not math.isfinite(running_loss):
            raise self.diverged(f"the training loss became {running_loss}")
        self.checked_step = self.position.step

    def check_weights_are_finite(self) -> None:
        """A step can make the weights inf or nan while its own loss was finite (an epoch's last
        step, say): they, and the validation loss, are checked at each evaluation, before
        anything is drawn from them."""
        if not all(torch.isfinite(p).all() for p in self.raw_model.parameters()):
            raise self.diverged("the model's weights became non-finite")

    def diverged(self, what: str) -> UserError:
        return UserError(
            f"{what} in epoch {self.position.epoch}, between steps {self.checked_step + 1} and "
            f"{self.position.step}, at learning rate {self.learning_rate:.3g}. Training stopped; "
            f"the last good checkpoint is {self.files.checkpoint_dir / LAST} if one was written. "
            "Try a lower optimizer.lr, trainer.grad_clip=1.0, or trainer.on_nonfinite=skip to "
            "skip such steps"
        )

    def stop(self, signal_number: int) -> None:
        """Save where the run is, mid-epoch, and leave the loop."""
        self.save(LAST, {})
        path = self.files.checkpoint_dir / LAST
        raise TrainingInterrupted(signal_number, str(path), self.position.step)

    @property
    def monitor(self) -> str:
        return f"val/{self.data.task.monitor}"

    @property
    def eval_model(self) -> nn.Module:
        """The weights evaluated and saved as the model: their moving average with EMA."""
        return self.ema.module if self.ema is not None else self.raw_model

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"] if self.optimizer else 0.0

    def is_improvement(self, val_metrics: dict[str, float]) -> bool:
        value, best = val_metrics[self.monitor], self.position.best["value"]
        higher_is_better = self.data.task.higher_is_better[self.data.task.monitor]
        return best is None or (value > best if higher_is_better else value < best)

    def save(self, name: str, metrics: dict[str, float]) -> None:
        """checkpoints/<name>: the whole training state, with the metrics of this moment."""
        self.files.write_checkpoint(name, self.state_dict(metrics))

    def state_dict(self, metrics: dict[str, float]) -> dict[str, Any]:
        """Everything `load_state_dict` needs to continue exactly here (the two mirror each
        other), and what eval and predict need to use the model: one self-describing dict."""
        # The epoch's partial sums over all ranks, so that any number of processes can resume.
        epoch_sums, epoch_count = self.processes.all_reduce_sums(*self.train_metrics.totals())
        return {
            "format_version": FORMAT_VERSION,
            "task": self.data.task.name,
            "input_shape": list(self.picture_batch[0].shape[1:]),  # one input's (C, H, W)
            **self.data_description(),
            "config": self.config,
            "metrics": metrics,
            # What eval and predict use (EMA: the average); a batched member's weights are views
            # of its group's stacked ones, and are saved alone.
            "model": own_storage(self.eval_model.state_dict()),
            **(
                {"trained_model": own_storage(self.raw_model.state_dict())}
                if self.ema is not None
                else {}
            ),  # fmt: skip
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},  # none: classical
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "scaler": self.scaler.state_dict(),
            "rng": rng_states(),
            **asdict(self.position),
            "epoch_sums": epoch_sums,
            "epoch_count": epoch_count,
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint exactly where it was written (resume.restore checks it)."""
        self.raw_model.load_state_dict(checkpoint.get("trained_model", checkpoint["model"]))
        if self.ema is not None:  # (a run without EMA until now: the average starts here)
            self.ema.module.load_state_dict(checkpoint["model"])
            self.ema.n_averaged.fill_(checkpoint["step"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        set_rng_states(checkpoint["rng"])
        saved = {f.name: checkpoint[f.name] for f in fields(Position) if f.name in checkpoint}
        self.position = Position(**saved)  # fields an older checkpoint lacks start as new
        # The saved partial sums cover every rank: rank 0 carries them on, the others start at 0.
        share = 1.0 if self.processes.is_main else 0.0
        epoch_sums = {k: v.to(self.device) * share for k, v in checkpoint["epoch_sums"].items()}
        self.train_metrics.reset(epoch_sums, int(checkpoint["epoch_count"] * share))
        self.checked_step = self.position.step
