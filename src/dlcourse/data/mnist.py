"""MNIST digits and Fashion-MNIST clothes, each from its four IDX files.

Both come in the same format and layout (`<data_dir>/<name>/raw/`); an `IdxDataset` holds what
differs (folder, class names, normalisation). The fast path (`loader: tensor`) decodes each split
once into one uint8 tensor (the IDX format is a header and raw bytes: read directly, since
importing torchvision costs over a second), normalises it once on the training device and slices
shuffled batches from it;
`loader: dataloader` is the classic `torchvision.datasets.MNIST` + `DataLoader` + transforms
path, kept for comparison. Downloading also goes through torchvision.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from dlcourse.data.augment import Augmentation
from dlcourse.data.batches import Batches, DataSplits, LoaderBatches, TensorBatches
from dlcourse.data.images import CachedImages
from dlcourse.errors import UserError
from dlcourse.tasks import ClassificationTask

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DOWNLOAD_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class IdxDataset:
    """What tells one IDX dataset from another; `name` is also its folder and torchvision class."""

    name: str
    class_names: tuple[str, ...]
    mean: float  # of the training pixels in [0, 1]: inputs are standardised with these
    std: float


DIGITS = IdxDataset("MNIST", tuple(str(digit) for digit in range(10)), 0.1307, 0.3081)
FASHION = IdxDataset(
    "FashionMNIST",
    (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),  # fmt: skip
    0.2860,
    0.3530,
)
MEAN, STD = DIGITS.mean, DIGITS.std  # over MNIST's 60,000 training images, as everyone uses


def missing_files(root: Path, spec: IdxDataset = DIGITS) -> list[str]:
    return [name for name in FILES if not (root / spec.name / "raw" / name).is_file()]


def missing_data_message(root: Path, reason: str, spec: IdxDataset = DIGITS) -> str:
    raw = root.resolve() / spec.name / "raw"
    return (
        f"{spec.name} is not in {raw} ({reason}). That folder must hold the four uncompressed IDX "
        f'files {", ".join(FILES)}. Fix: on a machine with internet, run `python -c "import '
        f"torchvision; torchvision.datasets.{spec.name}('data', download=True)\"` and copy "
        f"data/{spec.name}/raw there, or point DLCOURSE_DATA_DIR (or dataset.data_dir=...) at a "
        f"folder that already holds {spec.name}/raw/."
    )


def download(root: Path, spec: IdxDataset = DIGITS) -> None:
    """Fetch the missing files with torchvision, giving up after a network timeout."""
    import torchvision.datasets  # imported here: torchvision costs seconds to import

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        getattr(torchvision.datasets, spec.name)(str(root), train=True, download=True)
    except (RuntimeError, OSError) as error:
        raise UserError(missing_data_message(root, f"download failed: {error}", spec)) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def load_split(root: Path, train: bool, transform=None, spec: IdxDataset = DIGITS):
    """One split as a torchvision dataset (`.data`, `.targets`: whole uint8 / int64 tensors)."""
    import torchvision.datasets

    try:
        dataset = getattr(torchvision.datasets, spec.name)
        return dataset(str(root), train=train, download=False, transform=transform)
    except (RuntimeError, ValueError, OSError) as error:
        reason = f"could not read it: {error}"
        raise UserError(missing_data_message(root, reason, spec)) from None


@dataclass
class Split:
    """One decoded split, shaped like torchvision's MNIST dataset."""

    data: torch.Tensor  # (N, 28, 28) uint8
    targets: torch.Tensor  # (N,) int64


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file: bytes 0 0 0x08 (unsigned bytes) and the number of dimensions, one big-endian
    uint32 size per dimension, then the data."""
    raw = path.read_bytes()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] == 0:
        raise ValueError(
            f"{path.name} is not an IDX file of unsigned bytes with at least one dimension"
        )
    sizes = struct.unpack(f">{raw[3]}I", raw[4 : 4 + 4 * raw[3]])
    data = torch.frombuffer(bytearray(raw[4 + 4 * raw[3] :]), dtype=torch.uint8)
    if data.numel() != torch.Size(sizes).numel():
        raise ValueError(
            f"{path.name} holds {data.numel()} bytes of data, its header promises "
            f"{torch.Size(sizes).numel()}"
        )
    return data.view(*sizes)


def read_split(root: Path, train: bool, spec: IdxDataset = DIGITS) -> Split:
    prefix = "train" if train else "t10k"
    raw = root / spec.name / "raw"
    images_path, labels_path = (
        raw / f"{prefix}-images-idx3-ubyte",
        raw / f"{prefix}-labels-idx1-ubyte",
    )
    try:
        images, labels = read_idx(images_path), read_idx(labels_path)
    except (ValueError, struct.error, OSError) as error:
        raise UserError(missing_data_message(root, f"could not read it: {error}", spec)) from None
    check_split(images_path, images, labels_path, labels, spec)
    return Split(images, labels.long())


def check_split(
    images_path: Path,
    images: torch.Tensor,
    labels_path: Path,
    labels: torch.Tensor,
    spec: IdxDataset = DIGITS,
) -> None:
    """Images (N, H, W) and N labels, each one of the classes: else one line naming the file."""
    num_classes = len(spec.class_names)
    if images.dim() != 3:
        raise UserError(
            f"{images_path} holds an array of shape {tuple(images.shape)}; {spec.name} images are "
            f"(N, 28, 28)"
        )
    if labels.dim() != 1 or len(labels) != len(images):
        raise UserError(
            f"{labels_path} holds {tuple(labels.shape)} labels for the {len(images)} images of "
            f"{images_path.name}; each image needs one label"
        )
    if len(labels) and labels.max() >= num_classes:
        raise UserError(
            f"{labels_path} holds label {labels.max().item()}; {spec.name}'s classes are 0 to "
            f"{num_classes - 1}"
        )


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


def mnist(
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
    """MNIST as train (60,000 − val_size, or `train_subset` of them), val (val_size, carved by
    `seed`) and test (10,000)."""
    files = open_mnist(data_dir, val_size, download_missing, seed, train_subset, DIGITS)
    if permute_pixels:
        shuffle_pixels(files, seed)
    augmentation = Augmentation(crop_padding, horizontal_flip)
    # fmt: off
    return idx_splits(files, batch_size, eval_batch_size, loader, num_workers, augmentation, seed,
                      device)
    # fmt: on


def fashion_mnist(
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
    """Fashion-MNIST (Zalando's 28×28 clothes in 10 classes), split as `mnist` splits MNIST."""
    files = open_mnist(data_dir, val_size, download_missing, seed, train_subset, FASHION)
    if permute_pixels:
        shuffle_pixels(files, seed)
    augmentation = Augmentation(crop_padding, horizontal_flip)
    # fmt: off
    return idx_splits(files, batch_size, eval_batch_size, loader, num_workers, augmentation, seed,
                      device)
    # fmt: on


def idx_splits(
    files: MnistFiles,
    batch_size: int,
    eval_batch_size: int,
    loader: str,
    num_workers: int,
    augmentation: Augmentation,
    seed: int,
    device: torch.device | str,
) -> DataSplits:
    """The three splits, standardised on the device (or through a DataLoader), with the task and
    what a new image needs to become an input like these. Augmented training images stay uint8
    on the device and are augmented and standardised a batch at a time (`CachedImages`)."""
    spec = files.spec
    description = {
        "input_shape": (1, 28, 28),
        "task": ClassificationTask(list(spec.class_names)),
        # dlcourse-predict redraws a user's picture the way the dataset's authors made theirs.
        "preprocessing": {
            "kind": "digit" if spec is DIGITS else "fashion",
            "mean": [spec.mean],
            "std": [spec.std],
        },
    }
    if loader == "dataloader":
        if augmentation:
            raise UserError("augmentation (crop_padding, horizontal_flip) needs loader=tensor")
        splits = dataloader_splits(files, batch_size, eval_batch_size, num_workers, seed)
        return DataSplits(*splits, **description)
    device = torch.device(device)
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
    return DataSplits(
        train=train,
        val=TensorBatches((images[val_indices], labels[val_indices]), eval_batch_size, False),
        test=TensorBatches(test, eval_batch_size, shuffle=False),
        **description,
    )


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
