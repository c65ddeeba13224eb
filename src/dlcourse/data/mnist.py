"""MNIST digits from the four IDX files.

The fast path (`loader: tensor`) decodes each split once into one uint8 tensor (the IDX format
is a header and raw bytes: read directly, since importing torchvision costs over a second),
normalises it once on the training device and slices shuffled batches from it;
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

from dlcourse.data.batches import Batches, DataSplits, LoaderBatches, TensorBatches
from dlcourse.errors import UserError
from dlcourse.tasks import ClassificationTask

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NUM_CLASSES = 10
MEAN, STD = 0.1307, 0.3081  # over the 60,000 training images, as everyone uses
DOWNLOAD_TIMEOUT_SECONDS = 30


def missing_files(root: Path) -> list[str]:
    return [name for name in FILES if not (root / "MNIST" / "raw" / name).is_file()]


def missing_data_message(root: Path, reason: str) -> str:
    raw = root.resolve() / "MNIST" / "raw"
    return (
        f"MNIST is not in {raw} ({reason}). That folder must hold the four uncompressed IDX files "
        f"{', '.join(FILES)}. Fix: on a machine with internet, run "
        f"`python -c \"import torchvision; torchvision.datasets.MNIST('data', download=True)\"` "
        f"and copy data/MNIST/raw there, or point DLCOURSE_DATA_DIR (or dataset.data_dir=...) at "
        f"a folder that already holds MNIST/raw/."
    )


def download(root: Path) -> None:
    """Fetch the missing files with torchvision, giving up after a network timeout."""
    from torchvision.datasets import MNIST  # imported here: torchvision costs seconds to import

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        MNIST(str(root), train=True, download=True)
    except (RuntimeError, OSError) as error:
        raise UserError(missing_data_message(root, f"download failed: {error}")) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def load_split(root: Path, train: bool, transform=None):
    """One split as a torchvision dataset (`.data`, `.targets`: whole uint8 / int64 tensors)."""
    from torchvision.datasets import MNIST

    try:
        return MNIST(str(root), train=train, download=False, transform=transform)
    except (RuntimeError, ValueError, OSError) as error:
        raise UserError(missing_data_message(root, f"could not read it: {error}")) from None


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


def read_split(root: Path, train: bool) -> Split:
    prefix = "train" if train else "t10k"
    raw = root / "MNIST" / "raw"
    try:
        images, labels = (
            read_idx(raw / f"{prefix}-images-idx3-ubyte"),
            read_idx(raw / f"{prefix}-labels-idx1-ubyte"),
        )
    except (ValueError, struct.error, OSError) as error:
        raise UserError(missing_data_message(root, f"could not read it: {error}")) from None
    check_split(
        raw / f"{prefix}-images-idx3-ubyte", images, raw / f"{prefix}-labels-idx1-ubyte", labels
    )
    return Split(images, labels.long())


def check_split(
    images_path: Path, images: torch.Tensor, labels_path: Path, labels: torch.Tensor
) -> None:
    """Images (N, H, W) and N labels, each a class 0-9: else one line naming the file."""
    if images.dim() != 3:
        raise UserError(
            f"{images_path} holds an array of shape {tuple(images.shape)}; MNIST images are (N, "
            f"28, 28)"
        )
    if labels.dim() != 1 or len(labels) != len(images):
        raise UserError(
            f"{labels_path} holds {tuple(labels.shape)} labels for the {len(images)} images of "
            f"{images_path.name}; each image needs one label"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise UserError(
            f"{labels_path} holds label {labels.max().item()}; MNIST's classes are 0 to "
            f"{NUM_CLASSES - 1}"
        )


def normalize(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, 28, 28) → float (N, 1, 28, 28), standardised, on `device` (copied as uint8)."""
    images = images.to(device).unsqueeze(1).float()
    return images.div_(255).sub_(MEAN).div_(STD)


@dataclass
class MnistFiles:
    """The decoded splits (whole uint8 / int64 tensors on the CPU) and the validation carve-up."""

    root: Path
    train: Split  # .data (60000, 28, 28) uint8, .targets (60000,)
    test: Split
    train_indices: torch.Tensor
    val_indices: torch.Tensor


def open_mnist(
    data_dir: str, val_size: int, download_missing: bool, seed: int, train_subset: int | None = None
) -> MnistFiles:
    """Find (or download) the IDX files, decode and check both splits, check `val_size`, carve out
    val;
    `train_subset` keeps that many training images (a random subset fixed by the seed)."""
    root = Path(data_dir).expanduser()
    if missing_files(root):
        if not download_missing:
            reason = f"missing {', '.join(missing_files(root))}; downloading is off"
            raise UserError(missing_data_message(root, reason))
        download(root)
    train_set, test_set = read_split(root, train=True), read_split(root, train=False)
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
        root, train_set, test_set, train_indices=train_indices, val_indices=order[:val_size]
    )


def mnist(
    data_dir: str,
    batch_size: int = 128,
    eval_batch_size: int = 1000,
    val_size: int = 5000,
    train_subset: int | None = None,
    download_missing: bool = True,
    loader: Literal["tensor", "dataloader"] = "tensor",
    num_workers: int = 0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DataSplits:
    """MNIST as train (60,000 − val_size, or `train_subset` of them), val (val_size, carved by
    `seed`) and test (10,000)."""
    files = open_mnist(data_dir, val_size, download_missing, seed, train_subset)
    if loader == "dataloader":
        return dataloader_splits(files, batch_size, eval_batch_size, num_workers, seed)
    device = torch.device(device)
    images, labels = normalize(files.train.data, device), files.train.targets.to(device)
    test = (normalize(files.test.data, device), files.test.targets.to(device))
    train_indices, val_indices = files.train_indices, files.val_indices
    return DataSplits(
        train=TensorBatches((images[train_indices], labels[train_indices]), batch_size, True, seed),
        val=TensorBatches((images[val_indices], labels[val_indices]), eval_batch_size, False),
        test=TensorBatches(test, eval_batch_size, shuffle=False),
        task=ClassificationTask(),
    )


def dataloader_splits(
    files: MnistFiles, batch_size: int, eval_batch_size: int, num_workers: int, seed: int
) -> DataSplits:
    """The classic path: torchvision's MNIST, a per-item ToTensor + Normalize, a DataLoader."""
    from torch.utils.data import Subset
    from torchvision import transforms

    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    train_set = load_split(files.root, train=True, transform=to_tensor)

    def batches(indices: torch.Tensor, size: int, shuffle: bool) -> Batches:
        return LoaderBatches(Subset(train_set, indices.tolist()), size, shuffle, seed, num_workers)

    test_set = load_split(files.root, train=False, transform=to_tensor)
    return DataSplits(
        train=batches(files.train_indices, batch_size, shuffle=True),
        val=batches(files.val_indices, eval_batch_size, shuffle=False),
        test=LoaderBatches(test_set, eval_batch_size, False, seed, num_workers),
        task=ClassificationTask(),
    )
