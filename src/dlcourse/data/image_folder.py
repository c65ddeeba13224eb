"""Classification on your own images: `dlcourse-train dataset=image_folder dataset.root=PATH`.

    PATH/train/<class>/*.png|jpg|...   one folder per class, named after it (torchvision's
    PATH/test/<class>/...              ImageFolder layout); without test/, it is carved from train
    PATH/val/<class>/...               optional: without it, val is carved from train by the seed
    or PATH/<class>/*.png|jpg|...      one folder of class folders: val and test carved from it

Each image is decoded with PIL, made grayscale or RGB (`channels`; transparency on white) and
made `image_size` square as `resize` says: center_crop (the default: scaled to cover the square,
the middle kept), pad (scaled to fit in it, black around) or squash (stretched).
When all of them fit in `cache_bytes` decoded, they are decoded once (by `num_workers`
processes) into one uint8 tensor on the training device, like MNIST's fast path; otherwise
DataLoader workers decode them batch by batch, every epoch (pinned memory, persistent workers).
Either way a batch is then augmented and normalised as a whole (`Finish`), so both paths give
the same inputs, and the same augmented batches for the same seed.
The normalisation is measured on the training images unless given, and stored in the run's
config (so eval, predict and resume use the very same numbers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from dlcourse.data.augment import Augmentation
from dlcourse.data.batches import Batch, DataSplits, LoaderBatches
from dlcourse.data.image_batches import CachedImages, Finish
from dlcourse.data.image_files import ImageFiles, Sample, decode_all, drop_bad, readable
from dlcourse.data.image_layout import find_splits
from dlcourse.infrastructure.checkpoint import Preprocessing
from dlcourse.infrastructure.errors import UserError
from dlcourse.tasks import ClassificationTask

log = logging.getLogger(__name__)

STATISTICS_SAMPLE = 2000  # images that measure the normalisation when streaming (all, if cached)


def measure_normalization(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), as pixels in [0, 1]."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):  # bounded memory for large sets
        pixels = chunk.to(torch.float64).div_(255)
        total += pixels.sum(dim=(0, 2, 3)).cpu()
        squares += pixels.square().sum(dim=(0, 2, 3)).cpu()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return [round(v, 6) for v in mean.tolist()], [round(max(v, 1e-3), 6) for v in std.tolist()]


class StreamedImages(LoaderBatches):
    """Batches decoded by DataLoader workers (uint8: a quarter of float's traffic between
    processes), then finished like cached ones (see `Finish`). An image that fails to decode
    stops the run with its name (`on_bad_image=stop`; the trainer saves its place first) or is
    left out and reported."""

    def __init__(
        self,
        files: ImageFiles,
        batch_size: int,
        shuffle: bool,
        settings: Settings,
        normalization: tuple[list[float], list[float]],
        augmentation: Augmentation = Augmentation(),
    ) -> None:
        super().__init__(files, batch_size, shuffle, settings.seed, settings.num_workers)
        self.samples, self.on_bad_image = files.samples, settings.on_bad_image
        self.finish = Finish(normalization, augmentation)
        self.epoch, self.rank = 0, 0
        self.skipped: set[Path] = set()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        super().set_epoch(epoch, start_batch)
        self.epoch = epoch

    def shard(self, rank: int, world_size: int) -> None:
        super().shard(rank, world_size)
        self.rank = rank

    def __iter__(self) -> Iterator[Batch]:
        stream = f"augment/{self.epoch}/{self.rank}"
        for index, (images, labels) in enumerate(super().__iter__(), start=self.start_batch):
            images, labels, bad = drop_bad(images, labels, self.samples, self.on_bad_image)
            for path in set(bad) - self.skipped:
                self.skipped.add(path)
                log.warning("skipped unreadable image %s (%d so far)", path, len(self.skipped))
            if len(labels):
                yield self.finish(images, self.seed, stream, index), labels


@dataclass
class Settings:
    """An image folder's settings, as `image_folder` checked them."""

    channels: int
    image_size: int
    batch_size: int
    eval_batch_size: int
    mean: list[float] | None  # None: measured on the training images
    std: list[float] | None
    augmentation: Augmentation
    num_workers: int
    on_bad_image: str
    seed: int
    device: torch.device
    resize: str


def image_folder(
    root: str | None = None,
    channels: Literal[1, 3] = 3,
    image_size: int = 32,
    batch_size: int = 128,
    eval_batch_size: int = 500,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    resize: Literal["squash", "pad", "center_crop"] = "squash",
    mean: list[float] | None = None,
    std: list[float] | None = None,
    crop_padding: int = 0,
    horizontal_flip: bool = False,
    resized_crop_scale: list[float] | None = None,
    cache_bytes: int = 1_000_000_000,
    num_workers: int = 2,
    on_bad_image: Literal["stop", "skip"] = "stop",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DataSplits:
    """Train / val / test from an image folder (see the module's docstring), cached on the device
    when all of it fits in `cache_bytes` decoded, else streamed from disk. (`resize` defaults to
    squash here, as runs from before it were made: configs/dataset/image_folder.yaml says
    center_crop.)"""
    folder = checked_root(root)
    check_settings(channels, mean, std, resized_crop_scale)
    classes, *splits = find_splits(folder, val_fraction, seed, test_fraction, on_bad_image)
    scale = tuple(resized_crop_scale) if resized_crop_scale else None
    augmentation = Augmentation(crop_padding, horizontal_flip, scale)
    # fmt: off
    settings = Settings(channels, image_size, batch_size, eval_batch_size, mean, std,
                        augmentation, num_workers, on_bad_image, seed, torch.device(device), resize)
    # fmt: on
    fits = sum(len(split) for split in splits) * channels * image_size**2 <= cache_bytes
    (train, val, test), (mean_found, std_found) = (
        cached_splits(splits, settings) if fits else streamed_splits(splits, settings)
    )
    found = {"mean": mean_found, "std": std_found}
    preprocessing = {"kind": Preprocessing.IMAGE, "channels": channels, "image_size": image_size}
    preprocessing["resize"] = resize  # predict makes a new photo square as training did
    return DataSplits(
        train, val, test, ClassificationTask(classes), (channels, image_size, image_size),
        preprocessing=preprocessing | found,
        found={name: value for name, value in found.items() if getattr(settings, name) is None},
    )  # fmt: skip


def normalization(
    settings: Settings, train_images: torch.Tensor
) -> tuple[list[float], list[float]]:
    """The given mean and std, else those of `train_images` (uint8)."""
    if settings.mean is not None and settings.std is not None:
        return settings.mean, settings.std
    mean, std = measure_normalization(train_images)
    return settings.mean or mean, settings.std or std


def cached_splits(
    splits: list[list[Sample]], settings: Settings
) -> tuple[tuple[CachedImages, ...], tuple[list[float], list[float]]]:
    """Every split decoded once into uint8 tensors on the device; batches are made from them."""
    s = settings
    decoded = [
        decode_all(split, s.channels, s.image_size, s.num_workers, s.on_bad_image, s.resize)
        for split in splits
    ]
    stats = normalization(s, decoded[0][0])
    (train_images, train_labels), val, test = (
        (images.to(s.device), labels.to(s.device)) for images, labels in decoded
    )
    train = CachedImages(train_images, train_labels, s.batch_size, True, s.seed, stats,
                         s.augmentation)  # fmt: skip
    return (
        train,
        CachedImages(*val, s.eval_batch_size, False, s.seed, stats),
        CachedImages(*test, s.eval_batch_size, False, s.seed, stats),
    ), stats


def streamed_splits(
    splits: list[list[Sample]], settings: Settings
) -> tuple[tuple[StreamedImages, ...], tuple[list[float], list[float]]]:
    """DataLoaders whose workers decode each image; the normalisation measured on a sample of the
    training images (unless given)."""
    s = settings
    train, val, test = (readable(split, s.on_bad_image) for split in splits)
    stats = (s.mean, s.std)
    if s.mean is None or s.std is None:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(s.seed))
        sample = [train[i] for i in order[:STATISTICS_SAMPLE]]
        images = decode_all(sample, s.channels, s.image_size, s.num_workers, "skip", s.resize)[0]
        stats = normalization(s, images)

    def files(samples: list[Sample]) -> ImageFiles:
        return ImageFiles(samples, s.channels, s.image_size, fit=s.resize)

    return (
        StreamedImages(files(train), s.batch_size, True, s, stats, s.augmentation),
        StreamedImages(files(val), s.eval_batch_size, False, s, stats),
        StreamedImages(files(test), s.eval_batch_size, False, s, stats),
    ), stats


def checked_root(root: str | None) -> Path:
    if root is None:
        raise UserError(
            "dataset=image_folder needs dataset.root=PATH: a folder with train/<class>/*.png (one "
            "folder per class), test/<class>/ and optionally val/<class>/"
        )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(f"dataset.root={root}: there is no such folder")
    return folder


def check_settings(
    channels: int, mean: list[float] | None, std: list[float] | None, scale: list[float] | None
) -> None:
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != channels:
            raise UserError(
                f"dataset.{name}={values} needs one number per channel ({channels}), or null to "
                "measure it on the training images"
            )
    if std is not None and min(std) <= 0:
        raise UserError(f"dataset.std={std} must be greater than 0 in every channel")
    if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
        raise UserError(
            f"dataset.resized_crop_scale={scale} should be [low, high] shares of the image's "
            "area with 0 < low ≤ high ≤ 1, e.g. [0.5, 1.0]; or null: no resized crop"
        )
