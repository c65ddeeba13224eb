"""Batched members: several runs of one architecture trained as one batched model, in one process.

    dlcourse-train experiment=fast_mlp_mnist seeds=5 trainer.batch_members=true
    dlcourse-train -m hydra/launcher=batched experiment=fast_mlp_mnist optimizer.lr=1e-3,3e-3

The members may differ only in their seed (initialisation, data order, validation images) and
the optimizer's and scheduler's scalar settings (learning rate, momentum, weight decay, ...).
Each is a whole run, in its own folder, with its own data, optimizer, schedule, metrics,
checkpoints and logs; every command takes it as it takes any run. What they share is the forward
and backward pass: their weights are stacked, (K, ...), and `torch.func.vmap` runs their K
forwards as one on the stack of their K batches. Each member's own module holds views of the
stacks, so its optimizer updates, evaluation and checkpoints are a separate run's code
(trainer.py); only `MemberGroup.train_one_epoch` and `train_step` are the group's.

Reading order: `train_members`, then `MemberGroup.train_step`, then `StackedWeights`.
"""

from __future__ import annotations

import copy
import logging
import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from dlcourse.data.batches import Batch, to_device
from dlcourse.infrastructure.config import to_plain_dict
from dlcourse.infrastructure.errors import DataError, TrainingInterrupted, UserError
from dlcourse.infrastructure.interrupt import StopSignal
from dlcourse.infrastructure.run_folder import LAST
from dlcourse.infrastructure.runtime import startup_objects_frozen
from dlcourse.infrastructure.schema import TrainerSettings, validate_config
from dlcourse.resume import restore
from dlcourse.run import (
    announce,
    build_components,
    hparams_metrics,
    prepare_training,
    run_outputs,
    setup_runtime,
)
from dlcourse.trainer import Trainer

log = logging.getLogger(__name__)

# The settings in which members may differ (besides these, every setting must be the same).
MEMBER_SETTINGS = ("seed", "dataset.seed", "optimizer.", "scheduler.", "resume", "tags")


def train_members(
    cfgs: list[DictConfig],
    output_dirs: list[Path],
    checkpoints: list[dict | None],
    hparams: list[dict],
    folders: list[AbstractContextManager],
) -> list[dict | Exception]:
    """Train the runs `cfgs` (into `output_dirs`, continuing `checkpoints`, each folder claimed
    by its `folders`) as one batched model. Returns each member's metrics, or the error that
    ended it (a member that diverges stops alone; the others go on)."""
    configs = [to_plain_dict(cfg) for cfg in cfgs]
    for config in configs:
        validate_config(config)
    check_batchable(configs)
    with ExitStack() as claimed:
        for folder in folders:
            claimed.enter_context(folder)
        trainers = [
            member_trainer(cfg, output_dir, checkpoint)
            for cfg, output_dir, checkpoint in zip(cfgs, output_dirs, checkpoints)
        ]
        stacked = StackedWeights([trainer.raw_model for trainer in trainers])
        for trainer, cfg, checkpoint in zip(trainers, cfgs, checkpoints):
            if checkpoint:
                restore(trainer, checkpoint, cfg.resume)
        log.info("%d members, trained as one batched model: %s", len(trainers),
                 ", ".join(trainer.name.rstrip(": ") for trainer in trainers))  # fmt: skip
        with startup_objects_frozen(), StopSignal() as stop_signal:
            try:
                results = MemberGroup(trainers, stacked, stop_signal).fit()
            finally:
                for trainer in trainers:
                    trainer.logger.close()
        stacked.release()  # each member's weights on their own again, to be written alone
        for trainer, result, hparam in zip(trainers, results, hparams):
            if not isinstance(result, Exception):
                write_member_results(trainer, result, hparam)
    return results


def check_batchable(configs: list[dict]) -> None:
    """Refuse, in one line, members that differ in more than seeds and scalar optimizer and
    scheduler settings, or settings that a batched model cannot honour."""
    first = flatten(configs[0])
    for config in configs[1:]:
        other = flatten(config)
        differing = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        differing = [k for k in differing if not k.startswith(MEMBER_SETTINGS) or "_target_" in k]
        if differing:
            raise UserError(
                f"batched members may differ only in seed and optimizer or scheduler settings, "
                f"not in {', '.join(differing[:5])}: train them one at a time "
                f"(trainer.batch_members=false, or a launcher other than batched)"
            )
    settings = TrainerSettings(**configs[0]["trainer"])
    unbatchable = {
        "trainer.compile": settings.compile,
        "trainer.early_stopping.patience": settings.early_stopping.get("patience"),
        "trainer.precision=16-mixed": settings.precision == "16-mixed",
        "trainer.profile_steps": settings.profile_steps,
        "trainer.detect_anomaly": settings.detect_anomaly,
    }
    for name, value in unbatchable.items():
        if value:
            raise UserError(
                f"{name} works on one run at a time: leave it out, or train the members one at "
                "a time (trainer.batch_members=false)"
            )


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def member_trainer(cfg: DictConfig, output_dir: Path, checkpoint: dict | None) -> Trainer:
    """One member's trainer, built as `run.train` builds a run's, from the same seed on: so
    its data, initial weights, optimizer and schedule are a separate run's."""
    settings = TrainerSettings(**to_plain_dict(cfg.trainer))
    processes, device = setup_runtime(settings, cfg.seed)
    if processes.world_size > 1:
        raise UserError("batched members train in one process: start them without torchrun")
    data, model, loss_fn, config = build_components(cfg, device, processes)
    model, optimizer, scheduler = prepare_training(
        cfg, model, len(data.train), settings, processes, device, checkpoint is not None
    )
    if optimizer is None:
        raise UserError(
            f"{type(model).__name__} learns without gradients: train it without batched members"
        )
    logger, files = run_outputs(config, output_dir, processes, checkpoint)
    announce(cfg, data, model, settings, device, output_dir, {})
    logger.log_train_and_val(["loss", data.task.monitor])
    # fmt: off
    trainer = Trainer(model, loss_fn, optimizer, scheduler, data, logger, settings, device,
                      files=files, config=config, processes=processes)
    # fmt: on
    trainer.name = f"{output_dir.name}: "
    return trainer


def write_member_results(trainer: Trainer, metrics: dict, hparams: dict) -> None:
    """What `run.train` writes at a run's end, for one member."""
    final = hparams_metrics(metrics, trainer.data.task.monitor)
    logger = trainer.logger
    logger.log_hparams(hparams, final, metrics.get("steps", 0))
    logger.close()
    trainer.files.write_results(metrics, trainer.raw_model, trainer.config["model"])
    logger.log_files(trainer.files.output_dir)
    if not trainer.settings.keep_checkpoints:
        trainer.files.remove_checkpoints()
    log.info("Run folder: %s", trainer.files.output_dir)


class StackedWeights:
    """The members' weights (and buffers, such as batch norm's running statistics) stacked
    along a new first dimension, and the members' modules pointed at views of them.

    The stacks are the leaves that autograd differentiates; after a backward pass
    `share_gradients` gives each member's parameters their slice of the stacked gradients, so
    each member's own optimizer updates its own weights, in place, inside the stacks.
    """

    def __init__(self, models: list[nn.Module]) -> None:
        self.params, self.buffers = stack_module_state(models)  # copies: (K, ...) each
        self.module = copy.deepcopy(models[0]).to("meta")  # the architecture, without weights
        self.members = []  # (member's parameter, its stack's name, member index)
        for index, model in enumerate(models):
            for name, parameter in model.named_parameters():
                parameter.data = self.params[name].data[index]
                self.members.append((parameter, name, index))
            for name, buffer in model.named_buffers():
                buffer.data = self.buffers[name].data[index]
        self.models = models

    def __call__(self, inputs: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        """The K members' outputs, (K, B, ...), for their K batches of inputs, (K, B, ...)."""

        def member_forward(params, buffers, member_inputs, *member_context):
            return functional_call(self.module, (params, buffers), (member_inputs, *member_context))

        # Dropout draws each member's own mask (not the one a separate run would draw).
        batched = vmap(member_forward, randomness="different")
        return batched(self.params, self.buffers, inputs, *context)

    def zero_grad(self) -> None:
        for stack in self.params.values():
            stack.grad = None

    def share_gradients(self) -> None:
        for parameter, name, index in self.members:
            gradient = self.params[name].grad
            parameter.grad = None if gradient is None else gradient[index]

    def release(self) -> None:
        """Give each member's weights their own storage again (the stacks are done with)."""
        for model in self.models:
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.data = tensor.data.clone()


class MemberGroup:
    """The members' trainers, stepped together: one batched forward and backward per step,
    then each member's own optimizer step, metrics and logs; each member's own evaluation and
    checkpoints at the end of each epoch."""

    def __init__(
        self, trainers: list[Trainer], stacked: StackedWeights, stop_signal: StopSignal
    ) -> None:
        self.trainers, self.stacked, self.stop_signal = trainers, stacked, stop_signal
        self.failed: dict[int, Exception] = {}  # member index → what ended it
        steps = {trainer.position.step for trainer in trainers}
        if len(steps) > 1:
            raise UserError(
                f"the members' checkpoints stopped at different steps ({sorted(steps)}): "
                "resume them one at a time (trainer.batch_members=false)"
            )

    def fit(self) -> list[dict | Exception]:
        first = self.trainers[0]
        starts = [time.perf_counter() - t.position.train_seconds for t in self.trainers]
        train_metrics = [trainer.resumed_train_metrics() for trainer in self.trainers]
        for epoch in range(first.position.epoch, first.settings.epochs + 1):
            for trainer in self.trainers:
                trainer.position.epoch = epoch
            train_metrics = self.train_one_epoch(epoch)
            for index, trainer in self.live():
                self.guard(index, trainer.end_epoch, epoch, train_metrics[index], starts[index])
        self.stop_signal.final_test = (str(first.files.output_dir.parent), first.position.step)
        for index, trainer in self.live():
            train_metrics[index] = self.guard(
                index, trainer.finish, train_metrics[index], starts[index]
            )
        return [self.failed.get(index, train_metrics[index]) for index in range(len(self.trainers))]

    def live(self) -> list[tuple[int, Trainer]]:
        """The members still training (one that diverged has stopped, alone)."""
        return [(i, t) for i, t in enumerate(self.trainers) if i not in self.failed]

    def guard(self, index: int, method, *arguments):
        """Run a member's method; a member's own failure (it diverged) ends that member only."""
        try:
            return method(*arguments)
        except UserError as error:
            log.error("%s%s", self.trainers[index].name, error)
            self.failed[index] = error
            return None

    def train_one_epoch(self, epoch: int) -> list[dict[str, float]]:
        totals = {trainer.start_epoch(epoch) for trainer in self.trainers}
        total = totals.pop()  # the same for all: the members' data differ only in order
        first = self.trainers[0]
        bar = first.progress_bar(zip(*(t.data.train for t in self.trainers)), epoch, total)
        start, samples = time.perf_counter(), 0
        try:
            for _, batches in zip(range(total), bar):
                batches = [
                    to_device(batch, t.device, t.settings.channels_last)
                    for batch, t in zip(batches, self.trainers)
                ]
                losses, outputs = self.train_step(batches)
                samples += outputs.shape[1]
                for index, trainer in self.live():
                    self.guard(index, trainer.after_step, losses[index], outputs[index],
                               batches[index], bar)  # fmt: skip
                if self.stop_signal.received:
                    self.stop(self.stop_signal.received)
        except DataError as error:  # an unreadable file: every member keeps its place
            for _, trainer in self.live()[1:]:
                trainer.save(LAST, {})
            raise first.saved_at_data_error(error) from None
        seconds = time.perf_counter() - start
        metrics = []
        for index, trainer in enumerate(self.trainers):
            trainer.position.batch_in_epoch = 0
            epoch_metrics = self.guard(index, trainer.epoch_train_metrics, samples, seconds)
            metrics.append(epoch_metrics or {})
        return metrics

    def train_step(self, batches: list[Batch]) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        """One step of every member: the batched forward and backward, then each member's own
        optimizer step. Returns each member's loss (None: skipped) and the outputs, (K, B, ...)."""
        inputs, targets, *context = (torch.stack(column) for column in zip(*batches))
        with self.trainers[0].autocast():
            outputs = self.stacked(inputs, *context)  # (K, B, ...)
            losses = [
                trainer.loss_fn(outputs[i], targets[i], *(c[i] for c in context))
                for i, trainer in enumerate(self.trainers)
            ]
        stepped = [i for i, t in self.live() if not t.skips_nonfinite(losses[i])]
        self.stacked.zero_grad()
        if stepped:  # each member's weights get the gradient of its own loss only
            torch.stack([losses[i] for i in stepped]).sum().backward()
        self.stacked.share_gradients()
        for index in stepped:
            self.trainers[index].optimizer_step()
        return [loss if i in stepped else None for i, loss in enumerate(losses)], outputs

    def stop(self, signal_number: int) -> None:
        """A stop signal: every member saves where it is, mid-epoch, then the group stops."""
        for _, trainer in self.live():
            trainer.save(LAST, {})
        first = self.trainers[0]
        raise TrainingInterrupted(signal_number, str(first.files.output_dir.parent),
                                  first.position.step)  # fmt: skip
