"""Batches of uint8 images kept on the training device, made float, augmented and standardised a
batch at a time: MNIST with augmentation, and a cached image folder."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from dlcourse.data.augment import Augmentation
from dlcourse.data.batches import Batch, TensorBatches
from dlcourse.data.masks import stream_seed


class Finish:
    """The last step of every batch, on either path: uint8 images (B, C, S, S) made float in
    [0, 1], augmented (training only; each image its own draw, from a generator seeded by seed,
    epoch, rank and batch, so a resumed run draws what the stopped one would have) and
    standardised."""

    def __init__(
        self, normalization: tuple[list[float], list[float]], augmentation: Augmentation
    ) -> None:
        self.mean, self.std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization)
        self.augmentation = augmentation

    def __call__(self, images: torch.Tensor, seed: int, stream: str, index: int) -> torch.Tensor:
        images = images.float().div_(255)  # (B, C, S, S) in [0, 1]
        if self.augmentation:
            generator = torch.Generator().manual_seed(stream_seed(seed, stream, index))
            images = self.augmentation.apply(images, generator)
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images - mean) / std


class CachedImages(TensorBatches):
    """Batches sliced from decoded uint8 images that sit on the training device, finished (see
    `Finish`) a batch at a time."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int,
        normalization: tuple[list[float], list[float]],
        augmentation: Augmentation = Augmentation(),
    ) -> None:
        super().__init__((images, labels), batch_size, shuffle, seed)
        self.finish = Finish(normalization, augmentation)

    def __iter__(self) -> Iterator[Batch]:
        stream = f"augment/{self.epoch}/{self.rank}"
        for index, (images, labels) in enumerate(super().__iter__(), start=self.start_batch):
            yield self.finish(images, self.seed, stream, index), labels
