"""Batch iterators shared by every dataset, and the bundle of splits a dataset builder returns."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from dlcourse.tasks import Task

Batch = tuple[torch.Tensor, ...]


class Batches(Protocol):
    """What the trainer iterates: an epoch of batches, reshuffled by `set_epoch`.

    `start_batch` skips the first batches of that epoch's order, to resume a run mid-epoch.
    """

    def __iter__(self) -> Iterator[Batch]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...


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

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        first = self.start_batch * self.batch_size
        if not self.shuffle:
            for start in range(first, self.num_samples, self.batch_size):
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).to(self.tensors[0].device)
        for start in range(first, self.num_samples, self.batch_size):
            indices = order[start : start + self.batch_size]
            yield tuple(t[indices] for t in self.tensors)


class LoaderBatches:
    """The standard `DataLoader` path, for datasets that are decoded item by item from disk."""

    def __init__(
        self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0
    ) -> None:
        self.seed = seed
        self.start_batch = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, generator=self.generator,
            num_workers=num_workers, pin_memory=torch.cuda.is_available(),
        )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.generator.manual_seed(self.seed + epoch)
        self.start_batch = start_batch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        # The loader has no cheap way to start mid-epoch: decode and drop the skipped batches.
        return itertools.islice(iter(self.loader), self.start_batch, None)


@dataclass
class DataSplits:
    """Everything the run needs from a dataset: its three splits and its task."""

    train: Batches
    val: Batches
    test: Batches
    task: Task
