"""Images on disk for classification: the class-folder layout, and files that do not decode.

    <root>/train/<class>/*.png|jpg|...   one folder per class, named after it (torchvision's
    <root>/test/<class>/...              ImageFolder layout); test/ holds the same classes
    <root>/val/<class>/...               optional: without it, val is carved from train

An image that does not decode stops the run with its name (`on_bad_image=stop`) or is left out
and reported (`skip`), whether it is found while filling the cache, by a header check before
streaming, or mid-epoch by a DataLoader worker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from dlcourse.data.image_decoding import decode_image
from dlcourse.infrastructure.checkpoint import MAX_CLASS_NAME
from dlcourse.infrastructure.errors import DataError, UserError, printable

log = logging.getLogger(__name__)

# What torchvision's ImageFolder reads; other files in a class folder are ignored.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
Sample = tuple[Path, int]  # an image file and its class


def class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_split(folder: Path, classes: list[str]) -> list[Sample]:
    """Every image under each class folder (sorted, subfolders included), labelled by class."""
    samples = []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (folder / name).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
        )
        if not files:
            raise UserError(
                f"class folder {folder / name} holds no images ({', '.join(EXTENSIONS[:4])}, ...): "
                "add some, or remove the folder"
            )
        samples += [(path, label) for path in files]
    return samples


def find_splits(
    root: Path, val_fraction: float, seed: int
) -> tuple[list[str], list[Sample], list[Sample], list[Sample]]:
    """The class names and the train, val and test images, checked: train/ and test/ exist and
    name the same classes (val/ too, when there is one); no class folder is empty."""
    if not (root / "train").is_dir():
        raise UserError(
            f"{root} has no train/ folder: an image folder holds train/<class>/*.png (one folder "
            "per class), test/<class>/ and optionally val/<class>/. Set dataset.root to it"
        )
    classes = class_folders(root / "train")
    if not classes:
        raise UserError(f"{root / 'train'} has no class folders: put each class's images in one")
    long = [name for name in classes if len(name) > MAX_CLASS_NAME]
    if long:
        raise UserError(
            f"class folder {root / 'train' / printable(long[0])[:60]}... has a name of "
            f"{len(long[0])} characters; class names may have at most {MAX_CLASS_NAME}: rename it"
        )
    splits = {}
    for split in ("train", "val", "test"):
        folder = root / split
        if split == "test" and not folder.is_dir():
            raise UserError(f"{root} has no test/ folder: add test/<class>/ with the same classes")
        if folder.is_dir():
            check_same_classes(folder, class_folders(folder), classes)
            splits[split] = scan_split(folder, classes)
    if "val" not in splits:
        splits["train"], splits["val"] = carve(splits["train"], val_fraction, seed, root)
    return classes, splits["train"], splits["val"], splits["test"]


def check_same_classes(folder: Path, found: list[str], classes: list[str]) -> None:
    if found != classes:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        difference = "; ".join(
            text
            for text in (
                f"missing {', '.join(missing[:5])}" if missing else "",
                f"not in train/: {', '.join(extra[:5])}" if extra else "",
            )
            if text
        )
        raise UserError(
            f"{folder} has other classes than train/ ({difference}); every split needs the same "
            "class folders"
        )


def carve(
    samples: list[Sample], fraction: float, seed: int, root: Path
) -> tuple[list[Sample], list[Sample]]:
    """Train and val images, val drawn from train by the seed (at least one of each)."""
    if not 0 < fraction < 1:
        raise UserError(f"dataset.val_fraction={fraction} must be between 0 and 1 (without val/)")
    num_val = max(1, round(fraction * len(samples)))
    if num_val >= len(samples):
        raise UserError(f"{root / 'train'} has {len(samples)} images: too few to carve out val")
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    train = [samples[i] for i in sorted(order[num_val:])]
    return train, [samples[i] for i in sorted(order[:num_val])]


class ImageFiles(Dataset):
    """(image, label) pairs decoded on demand: uint8 (C, S, S), or what `transform` makes of it.

    An image that cannot be decoded comes back as zeros with the label −1 − index, so that the
    process that reads the batch (not a worker) decides what to do with it (`on_bad_image`)."""

    def __init__(self, samples: list[Sample], channels: int, size: int, transform=None) -> None:
        self.samples, self.size, self.transform = samples, size, transform
        self.mode = "L" if channels == 1 else "RGB"
        self.channels = channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            image = decode_image(path, self.mode, self.size)
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
    samples: list[Sample], channels: int, size: int, num_workers: int, on_bad_image: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image decoded once, by `num_workers` processes: uint8 (N, C, S, S) and labels (N,);
    unreadable ones stop the run, or are left out and reported."""
    files = ImageFiles(samples, channels, size)
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


def check_folder_classes(checkpoint: dict[str, Any], dataset: DictConfig, path: Path) -> None:
    """An image-folder run learned label k as the k-th class folder (sorted by name): the folder
    read now must hold the very classes the checkpoint names, or every label would mean another
    class (a renamed folder scored a perfect model 0.0; an added one broke resume=)."""
    names, root = checkpoint.get("class_names"), dataset.get("root")
    train = Path(str(root)).expanduser() / "train" if root else None
    if not names or train is None or not train.is_dir():
        return  # not an image-folder run, or a folder that the dataset itself will refuse
    found = class_folders(train)
    if found == names:
        return
    missing, new = [n for n in names if n not in found], [n for n in found if n not in names]

    def listed(group: list[str]) -> str:
        return ", ".join(repr(printable(n)[:40]) for n in group[:3]) + (", ..." * (len(group) > 3))

    differences = [f"missing {listed(missing)}"] * bool(missing) + [f"new {listed(new)}"] * bool(
        new
    )
    raise UserError(
        f"{train} holds other classes than {path} was trained on "
        f"({'; '.join(differences) or 'in another order'}): its labels would name the wrong "
        f"classes. "
        f"Restore the class folders as they were ({listed(names)}), or train a new run"
    )
