"""MNIST digits and Fashion-MNIST clothes: one builder, `idx_builder`, makes both datasets'
(`dataset=mnist`, `dataset=fashion_mnist`); their files are idx_files.py's.

The fast path (`loader: tensor`) decodes each split once into one uint8 tensor, normalises it
once on the training device and slices shuffled batches from it; `loader: dataloader` is the
classic `torchvision.datasets.MNIST` + `DataLoader` + transforms path, kept for comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from dlcourse.data.augment import Augmentation
from dlcourse.data.batches import Batches, DataSplits, LoaderBatches, TensorBatches
from dlcourse.data.idx_files import (
    DIGITS,
    FASHION,
    IdxDataset,
    Split,
    download,
    load_split,
    missing_data_message,
    missing_files,
    read_split,
)
from dlcourse.data.image_batches import CachedImages
from dlcourse.infrastructure.checkpoint import Preprocessing
from dlcourse.infrastructure.errors import UserError
from dlcourse.tasks import ClassificationTask


def normalize(
    images: torch.Tensor, device: torch.device, spec: IdxDataset = DIGITS
) -> torch.Tensor:
    """uint8 (N, 28, 28) → float (N, 1, 28, 28), standardised, on `device` (copied as uint8)."""
    images = images.to(device).unsqueeze(1).float()
    return images.div_(255).sub_(spec.mean).div_(spec.std)


@dataclass
class MnistFiles:
    """The decoded splits (whole uint8 / int64 tensors on the CPU) and the validation carve-up."""

    root: Path
    spec: IdxDataset
    train: Split  # .data (60000, 28, 28) uint8, .targets (60000,)
    test: Split
    train_indices: torch.Tensor
    val_indices: torch.Tensor


def open_mnist(
    data_dir: str,
    val_size: int,
    download_missing: bool,
    seed: int,
    train_subset: int | None = None,
    spec: IdxDataset = DIGITS,
) -> MnistFiles:
    """Find (or download) the IDX files, decode and check both splits, check `val_size`, carve out
    val; `train_subset` keeps that many training images (a random subset fixed by the seed)."""
    root = Path(data_dir).expanduser()
    if missing_files(root, spec):
        if not download_missing:
            reason = f"missing {', '.join(missing_files(root, spec))}; downloading is off"
            raise UserError(missing_data_message(root, reason, spec))
        download(root, spec)
    train_set = read_split(root, train=True, spec=spec)
    test_set = read_split(root, train=False, spec=spec)
    num_train = len(train_set.targets)
    if not 0 < val_size < num_train:
        raise UserError(f"dataset.val_size={val_size} must be between 1 and {num_train - 1}")
    if train_subset is not None and not 0 < train_subset <= num_train - val_size:
        raise UserError(
            f"dataset.train_subset={train_subset} must be between 1 and {num_train - val_size} "
            f"(the training images left beside val_size={val_size}), or null for all of them"
        )
    # The validation images are fixed by the seed alone, so every run with that seed shares them.
    order = torch.randperm(num_train, generator=torch.Generator().manual_seed(seed))
    train_indices = order[val_size:][:train_subset]  # [:None] keeps all
    return MnistFiles(
        root, spec, train_set, test_set, train_indices=train_indices, val_indices=order[:val_size]
    )


def shuffle_pixels(files: MnistFiles, seed: int) -> None:
    """Put every image's pixels in one fixed random order (the same for all images, drawn by the
    seed): no information is lost, but neighbouring pixels are no longer neighbours. An MLP,
    which never knew where a pixel was, learns as well as before; a CNN, built on neighbourhoods,
    does not (docs/course.md)."""
    order = torch.randperm(28 * 28, generator=torch.Generator().manual_seed(seed))
    for split in (files.train, files.test):
        split.data = split.data.flatten(1)[:, order].view_as(split.data)


def idx_builder(spec: IdxDataset, what: str) -> Callable[..., DataSplits]:
    """The dataset builder (a config's `_target_`) of one IDX dataset: MNIST and Fashion-MNIST
    differ only in their files, classes and pixel statistics (`spec`)."""

    def build(
        data_dir: str,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        train_subset: int | None = None,
        download_missing: bool = True,
        loader: Literal["tensor", "dataloader"] = "tensor",
        num_workers: int = 0,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        permute_pixels: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> DataSplits:
        files = open_mnist(data_dir, val_size, download_missing, seed, train_subset, spec)
        if permute_pixels:
            shuffle_pixels(files, seed)
        augmentation = Augmentation(crop_padding, horizontal_flip)
        if loader == "dataloader":
            if augmentation:
                raise UserError("augmentation (crop_padding, horizontal_flip) needs loader=tensor")
            splits = dataloader_splits(files, batch_size, eval_batch_size, num_workers, seed)
            return DataSplits(*splits, **description(spec))
        splits = tensor_splits(files, batch_size, eval_batch_size, augmentation, seed, device)
        return DataSplits(*splits, **description(spec))

    build.__doc__ = f"""{what} as train (60,000 − val_size, or `train_subset` of them), val
    (val_size, carved by `seed`) and test (10,000)."""
    build.__name__ = build.__qualname__ = "mnist" if spec is DIGITS else "fashion_mnist"
    return build


mnist = idx_builder(DIGITS, "MNIST")
fashion_mnist = idx_builder(FASHION, "Fashion-MNIST (Zalando's 28×28 clothes in 10 classes)")


def description(spec: IdxDataset) -> dict[str, Any]:
    """The input shape and task, and what a new image needs to become an input like these:
    dlcourse-predict redraws a user's picture the way the dataset's authors made theirs."""
    kind = Preprocessing.DIGIT if spec is DIGITS else Preprocessing.FASHION
    return {
        "input_shape": (1, 28, 28),
        "task": ClassificationTask(list(spec.class_names)),
        "preprocessing": {"kind": kind, "mean": [spec.mean], "std": [spec.std]},
    }


def tensor_splits(
    files: MnistFiles,
    batch_size: int,
    eval_batch_size: int,
    augmentation: Augmentation,
    seed: int,
    device: torch.device | str,
) -> tuple[Batches, Batches, Batches]:
    """The three splits standardised on the device. Augmented training images stay uint8 on the
    device and are augmented and standardised a batch at a time (`CachedImages`)."""
    spec, device = files.spec, torch.device(device)
    images, labels = normalize(files.train.data, device, spec), files.train.targets.to(device)
    test = (normalize(files.test.data, device, spec), files.test.targets.to(device))
    train_indices, val_indices = files.train_indices, files.val_indices
    train = TensorBatches((images[train_indices], labels[train_indices]), batch_size, True, seed)
    if augmentation:
        raw = files.train.data[train_indices].unsqueeze(1).to(device)  # (N, 1, 28, 28) uint8
        stats = ([spec.mean], [spec.std])
        # fmt: off
        train = CachedImages(raw, labels[train_indices], batch_size, True, seed, stats,
                             augmentation)
        # fmt: on
    val = TensorBatches((images[val_indices], labels[val_indices]), eval_batch_size, False)
    return train, val, TensorBatches(test, eval_batch_size, shuffle=False)


def dataloader_splits(
    files: MnistFiles, batch_size: int, eval_batch_size: int, num_workers: int, seed: int
) -> tuple[Batches, Batches, Batches]:
    """The classic path: torchvision's dataset, a per-item ToTensor + Normalize, a DataLoader."""
    from torch.utils.data import Subset
    from torchvision import transforms

    spec = files.spec
    to_tensor = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((spec.mean,), (spec.std,))]
    )
    train_set = load_split(files.root, train=True, transform=to_tensor, spec=spec)

    def batches(indices: torch.Tensor, size: int, shuffle: bool) -> Batches:
        return LoaderBatches(Subset(train_set, indices.tolist()), size, shuffle, seed, num_workers)

    test_set = load_split(files.root, train=False, transform=to_tensor, spec=spec)
    return (
        batches(files.train_indices, batch_size, shuffle=True),
        batches(files.val_indices, eval_batch_size, shuffle=False),
        LoaderBatches(test_set, eval_batch_size, False, seed, num_workers),
    )
