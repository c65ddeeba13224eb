"""Batch iterators shared by every dataset, and the bundle of splits a dataset builder returns."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from dlcourse.tasks import Task

Batch = tuple[torch.Tensor, ...]


class Batches(Protocol):
    """What the trainer iterates: an epoch of batches, reshuffled by `set_epoch`.

    `start_batch` skips the first batches of that epoch's order, to resume a run mid-epoch.
    """

    def __iter__(self) -> Iterator[Batch]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...
    def shard(self, rank: int, world_size: int) -> None: ...


class TensorBatches:
    """Mini-batches sliced from whole-split tensors that already sit on the training device.

    Shuffling indexes the tensors with one `torch.randperm` per epoch, seeded by seed + epoch
    (as `DistributedSampler` does), so every epoch has its own order and a run is reproducible.
    """

    def __init__(self, tensors: Batch, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        self.num_samples = tensors[0].shape[0]
        self.rank, self.world_size = 0, 1

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def shard(self, rank: int, world_size: int) -> None:
        """Give this process every `world_size`-th sample of each epoch's order, from `rank` on.

        Training shards are padded (with samples from the start of the order) to equal length,
        so every rank takes the same number of steps; evaluation shards are exact.
        """
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return -(-self.shard_size() // self.batch_size)

    def shard_size(self) -> int:
        if self.world_size == 1:
            return self.num_samples
        if self.shuffle:
            return -(-self.num_samples // self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))

    def __iter__(self) -> Iterator[Batch]:
        first = self.start_batch * self.batch_size
        if not self.shuffle and self.world_size == 1:  # slices are views: no copy at all
            for start in range(first, self.num_samples, self.batch_size):
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
            return
        order = self.order()
        for start in range(first, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            yield tuple(t[indices] for t in self.tensors)

    def order(self) -> torch.Tensor:
        """This process's sample indices for the epoch, on the tensors' device."""
        device = self.tensors[0].device
        if not self.shuffle:
            return torch.arange(self.rank, self.num_samples, self.world_size, device=device)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)  # the same on every rank
        order = torch.randperm(self.num_samples, generator=generator)
        padded = self.shard_size() * self.world_size
        order = torch.cat([order, order[: padded - self.num_samples]])[self.rank :: self.world_size]
        return order.to(device)


class LoaderBatches:
    """The standard `DataLoader` path, for datasets that are decoded item by item from disk."""

    def __init__(
        self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0
    ) -> None:
        self.seed = seed
        self.shuffle = shuffle
        self.start_batch = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.settings = {
            "batch_size": batch_size,
            "num_workers": num_workers,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": num_workers > 0,  # not restarted every epoch
        }
        self.loader = DataLoader(
            dataset, shuffle=shuffle, generator=self.generator, **self.settings
        )
        self.sampler: DistributedSampler | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.generator.manual_seed(self.seed + epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.start_batch = start_batch

    def shard(self, rank: int, world_size: int) -> None:
        """Training: a `DistributedSampler` (padded shards, reshuffled by epoch); evaluation:
        every `world_size`-th item from `rank` on (exact shards)."""
        dataset = self.loader.dataset
        if self.shuffle:
            self.sampler = DistributedSampler(
                dataset, world_size, rank, shuffle=True, seed=self.seed
            )
            self.loader = DataLoader(dataset, sampler=self.sampler, **self.settings)
        else:
            self.loader = DataLoader(
                Subset(dataset, range(rank, len(dataset), world_size)), **self.settings
            )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        # The loader has no cheap way to start mid-epoch: decode and drop the skipped batches.
        return itertools.islice(iter(self.loader), self.start_batch, None)


@dataclass
class DataSplits:
    """Everything the run needs from a dataset: its three splits, its task, and what the model
    must fit (one input's shape; the task's classes)."""

    train: Batches
    val: Batches
    test: Batches
    task: Task
    input_shape: tuple[int, int, int]  # one input's (C, H, W)
    # How a new image becomes an input like these (stored in checkpoints, for dlcourse-predict):
    # {"kind": "digit" | "fashion" | "image", "mean": [per channel], "std": [per channel]}.
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # Dataset settings the config left to the data (null) and the values found for them (an image
    # folder's normalisation): written into the run's config, so that a resume or dlcourse-eval
    # rebuilds the data exactly as this run saw it.
    found: dict[str, Any] = field(default_factory=dict)

    def shard(self, rank: int, world_size: int) -> None:
        """Each of `world_size` processes gets its own part of every split."""
        for batches in (self.train, self.val, self.test):
            batches.shard(rank, world_size)


def to_device(batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
    """Copy a batch to the device (asynchronously from pinned memory; a no-op when it is there
    already), images (4-d tensors) in the model's memory layout."""
    layout = torch.channels_last if channels_last else torch.preserve_format
    return tuple(
        t.to(device, non_blocking=True, memory_format=layout)
        if t.dim() == 4
        else t.to(device, non_blocking=True)
        for t in batch
    )
