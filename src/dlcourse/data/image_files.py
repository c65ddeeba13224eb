"""Image files for classification: decoding them, and files that do not decode.

An image that does not decode stops the run with its name (`on_bad_image=stop`) or is left out
and reported (`skip`), whether it is found while filling the cache, by a header check before
streaming, or mid-epoch by a DataLoader worker. Which files make which split:
dlcourse.data.image_layout.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from dlcourse.data.image_decoding import decode_image
from dlcourse.infrastructure.errors import DataError, UserError

log = logging.getLogger(__name__)

# What torchvision's ImageFolder reads; other files in a class folder are ignored.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
Sample = tuple[Path, int]  # an image file and its class


class ImageFiles(Dataset):
    """(image, label) pairs decoded on demand: uint8 (C, S, S), or what `transform` makes of it.

    An image that cannot be decoded comes back as zeros with the label −1 − index, so that the
    process that reads the batch (not a worker) decides what to do with it (`on_bad_image`)."""

    def __init__(
        self, samples: list[Sample], channels: int, size: int, transform=None, fit: str = "squash"
    ) -> None:
        self.samples, self.size, self.transform, self.fit = samples, size, transform, fit
        self.mode = "L" if channels == 1 else "RGB"
        self.channels = channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            image = decode_image(path, self.mode, self.size, fit=self.fit)
        except Exception:  # PIL raises many types for damaged files; named by the reader
            image = torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8)
            label = -1 - index
        return (self.transform(image) if self.transform else image), label


def why_unreadable(path: Path) -> str:
    """What PIL says about a file that did not decode (asked again, in this process)."""
    try:
        decode_image(path, "RGB", 8)
    except Exception as error:
        return str(error).splitlines()[0][:160] or type(error).__name__
    return "it could not be read (it reads now: did it change during the run?)"


def bad_image_message(path: Path) -> str:
    return (
        f"cannot read image {path}: {why_unreadable(path)}. Replace or remove it, or pass "
        "dataset.on_bad_image=skip to leave unreadable images out"
    )


def drop_bad(
    images: torch.Tensor, labels: torch.Tensor, samples: list[Sample], on_bad_image: str
) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """The batch without the images that failed to decode, and their files; with
    on_bad_image=stop, a `DataError` naming the first one instead."""
    bad = labels < 0
    if not bad.any():
        return images, labels, []
    paths = [samples[-1 - i][0] for i in labels[bad].tolist()]
    if on_bad_image == "stop":
        raise DataError(bad_image_message(paths[0]))
    return images[~bad], labels[~bad], paths


def decode_all(
    samples: list[Sample],
    channels: int,
    size: int,
    num_workers: int,
    on_bad_image: str,
    fit: str = "squash",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image decoded once, by `num_workers` processes: uint8 (N, C, S, S) and labels (N,);
    unreadable ones stop the run, or are left out and reported."""
    files = ImageFiles(samples, channels, size, fit=fit)
    loader = DataLoader(files, batch_size=256, num_workers=num_workers)
    images, labels = (torch.cat(parts) for parts in zip(*loader))
    images, labels, bad = drop_bad(images, labels, samples, on_bad_image)
    report_skipped(bad, len(samples))
    return images, labels


def report_skipped(paths: list[Path], total: int) -> None:
    if paths:
        names = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        log.warning("skipped %d unreadable image(s) of %d: %s", len(paths), total, names)


def readable(samples: list[Sample], on_bad_image: str) -> list[Sample]:
    """The images whose headers PIL reads (cheap: nothing is decoded); unreadable ones stop the
    run, or are left out and reported. Damage further into a file shows when it is decoded."""
    from PIL import Image

    good, bad = [], []
    for path, label in samples:
        try:
            with Image.open(path):
                good.append((path, label))
        except Exception:  # PIL raises many types for files that are not images
            if on_bad_image == "stop":
                raise UserError(bad_image_message(path)) from None
            bad.append(path)
    report_skipped(bad, len(samples))
    return good
