"""MNIST's and Fashion-MNIST's four IDX files each: where they lie (`<data_dir>/<name>/raw/`),
downloading them when missing (through torchvision), reading and checking them.

The IDX format is a header and raw bytes: read directly, since importing torchvision costs over
a second. An `IdxDataset` holds what tells the two datasets apart (folder, class names, pixel
statistics).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from dlcourse.infrastructure.errors import UserError

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
