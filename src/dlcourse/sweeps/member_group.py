"""The batched members' shared step: their weights stacked, one vmap'd forward and backward pass
for all of them, each member's own optimizer step (dlcourse/sweeps/members.py builds them).

Reading order: `MemberGroup.train_step`, then `StackedWeights`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from dlcourse.data.batches import Batch, to_device
from dlcourse.infrastructure.errors import DataError, TrainingInterrupted, UserError
from dlcourse.infrastructure.interrupt import StopSignal
from dlcourse.infrastructure.run_folder import LAST
from dlcourse.trainer import Trainer

log = logging.getLogger(__name__)


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

        def member_forward(
            params: dict, buffers: dict, member_inputs: torch.Tensor, *member_context: torch.Tensor
        ) -> torch.Tensor:
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

    def fit(self) -> list[dict | Exception]:
        first = self.trainers[0]
        starts = [time.perf_counter() - t.position.train_seconds for t in self.trainers]
        train_metrics = [trainer.resumed_train_metrics() for trainer in self.trainers]
        for epoch in range(first.position.epoch, first.settings.epochs + 1):
            if not self.live():
                break
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

    def guard(self, index: int, method: Callable[..., Any], *arguments: Any) -> Any:
        """Run a member's method; a member's own failure (it diverged) ends that member only."""
        try:
            return method(*arguments)
        except UserError as error:
            log.error("%s%s", self.trainers[index].name, error)
            self.failed[index] = error
            return None

    def train_one_epoch(self, epoch: int) -> list[dict[str, float]]:
        live = self.live()
        for _, trainer in live:
            trainer.position.epoch = epoch
        total = min(trainer.start_epoch(epoch) for _, trainer in live)  # (all the same)
        first = live[0][1]
        bar = first.progress_bar(zip(*(t.data.train for t in self.trainers)), epoch, total)
        start, samples = time.perf_counter(), 0
        try:
            for _, batches in zip(range(total), bar):
                batches = [to_device(batch, t.device, t.settings.channels_last)
                           for batch, t in zip(batches, self.trainers)]  # fmt: skip
                losses, outputs = self.train_step(batches)
                samples += outputs.shape[1]
                for index, trainer in self.live():
                    self.guard(index, trainer.after_step, losses[index], outputs[index],
                               batches[index], bar)  # fmt: skip
                if self.stop_signal.received:
                    self.stop(self.stop_signal.received)
        except DataError as error:  # an unreadable file: every member keeps its place
            raise self.saved_at(error) from None
        seconds = time.perf_counter() - start
        metrics: list[dict[str, float]] = [{} for _ in self.trainers]
        for index, trainer in self.live():
            trainer.position.batch_in_epoch = 0
            epoch_metrics = self.guard(index, trainer.epoch_train_metrics, samples, seconds)
            metrics[index] = epoch_metrics or {}
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

    def saved_at(self, error: DataError) -> DataError:
        for _, trainer in self.live():
            trainer.save(LAST, {})
        group = self.trainers[0].files.output_dir.parent
        return DataError(f"{error}; every member saved its place (in {group}) and continues "
                         "from there when resumed")  # fmt: skip
