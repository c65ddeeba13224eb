"""Images on disk for classification: the class-folder layouts, and files that do not decode.

    <root>/train/<class>/*.png|jpg|...   one folder per class, named after it (torchvision's
    <root>/test/<class>/...              ImageFolder layout); test/ holds the same classes
    <root>/val/<class>/...               optional: without it, val is carved from train

Without test/ (train/ and val/, as many datasets come), test is carved from train/; a single
folder of class folders (<root>/<class>/*.png) gives all three, test and val carved from it.
Each carved split is drawn by the seed, so eval, predict and resume carve the same, and the log
says so. Links inside a class folder are followed (as torchvision does) unless they lead out of
the root; a link to nothing is named. Hidden files (.DS_Store, macOS's ._x.png) are left out, as
hidden folders are, and counted in the log.

An image that does not decode stops the run with its name (`on_bad_image=stop`) or is left out
and reported (`skip`), whether it is found while filling the cache, by a header check before
streaming, or mid-epoch by a DataLoader worker.
"""

from __future__ import annotations

import logging
import os
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


def scan_split(folder: Path, classes: list[str], root: Path, on_bad_image: str) -> list[Sample]:
    """Every image under each class folder (sorted, subfolders and links included), labelled by
    class; hidden files left out and counted, links to nothing named."""
    samples, hidden, broken = [], 0, []
    for label, name in enumerate(classes):
        files, skipped, dead = class_images(folder / name, root)
        if not files:
            raise UserError(
                f"class folder {folder / name} holds no images ({', '.join(EXTENSIONS[:4])}, ...): "
                "add some, or remove the folder"
            )
        samples += [(path, label) for path in files]
        hidden, broken = hidden + skipped, broken + dead
    if hidden:
        log.info("%s: left out %d hidden file(s) (names starting with '.')", folder, hidden)
    if broken and on_bad_image == "stop":
        raise UserError(
            f"{broken[0]} is a link to {os.readlink(broken[0])}, which does not exist: remove the "
            f"link or restore what it points to, or pass dataset.on_bad_image=skip to leave such "
            f"files out"
        )
    report_skipped(broken, len(samples) + len(broken))
    return samples


def class_images(folder: Path, root: Path) -> tuple[list[Path], int, list[Path]]:
    """A class folder's images, its hidden files (counted) and its links to nothing. Links to
    folders and files are followed, as torchvision's ImageFolder follows them, but never out of
    `root` (refused in one line) nor round a loop."""
    top, images, hidden, broken, seen = root.resolve(), [], 0, [], set()
    for current, folders, names in os.walk(folder, followlinks=True):
        here = Path(current)
        real = inside(here, top)
        folders[:] = [] if real in seen else [f for f in folders if not f.startswith(".")]
        if real in seen:  # a link back up the tree
            continue
        seen.add(real)
        for name in names:
            path = here / name
            if name.startswith("."):
                hidden += 1
            elif path.suffix.lower() in EXTENSIONS and not path.exists():
                broken.append(path)  # a link to nothing
            elif path.suffix.lower() in EXTENSIONS and path.is_file():
                inside(path, top)
                images.append(path)
    return sorted(images), hidden, broken


def inside(path: Path, top: Path) -> Path:
    """Where `path` really is; a link that leads out of the dataset's root is refused."""
    real = path.resolve()
    if real != top and top not in real.parents:
        raise UserError(
            f"{path} leads to {real}, outside dataset.root ({top}): copy what it points to into "
            "the folder, or set dataset.root to a folder that holds both"
        )
    return real


def split_folders(root: Path) -> dict[str, Path]:
    """The folders of the splits the root has: train/, val/ and test/, or the root itself as the
    one folder of class folders (then train holds all, and val and test are carved)."""
    if (root / "train").is_dir():
        names = ("train", "val", "test")
        return {name: root / name for name in names if (root / name).is_dir()}
    named = [name for name in ("val", "test") if (root / name).is_dir()]
    if named or not class_folders(root):
        raise UserError(
            f"{root} has {'/, '.join(named) + '/ but ' if named else ''}no train/ folder: an image "
            "folder holds train/<class>/*.png (one folder per class), optionally val/<class>/ and "
            "test/<class>/, or is itself one folder of class folders (<class>/*.png). Set "
            "dataset.root to it"
        )
    return {"train": root}


def find_splits(
    root: Path, val_fraction: float, seed: int, test_fraction: float = 0.1, on_bad: str = "stop"
) -> tuple[list[str], list[Sample], list[Sample], list[Sample]]:
    """The class names and the train, val and test images, checked: every split names the same
    classes, no class folder is empty; a missing test or val split carved by the seed."""
    folders = split_folders(root)
    classes = class_folders(folders["train"])
    if not classes:
        raise UserError(f"{folders['train']} has no class folders: put each class's images in one")
    long = [name for name in classes if len(name) > MAX_CLASS_NAME]
    if long:
        raise UserError(
            f"class folder {folders['train'] / printable(long[0])[:60]}... has a name of "
            f"{len(long[0])} characters; class names may have at most {MAX_CLASS_NAME}: rename it"
        )
    splits = {}
    for split, folder in folders.items():
        check_same_classes(folder, class_folders(folder), classes)
        splits[split] = scan_split(folder, classes, root, on_bad)
    train = folders["train"]
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split not in splits:
            splits["train"], splits[split] = carve(splits["train"], fraction, seed, train)
            total = len(splits["train"]) + len(splits[split])
            log.info(
                "%s: no %s/ folder, so %d of its %d images are the %s split "
                "(dataset.%s_fraction=%s, drawn by seed %d: the same each time)",
                train, split, len(splits[split]), total, split, split, fraction, seed,
            )  # fmt: skip
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
    samples: list[Sample], fraction: float, seed: int, folder: Path
) -> tuple[list[Sample], list[Sample]]:
    """The images kept, and a split drawn from them by the seed (at least one of each)."""
    if not 0 < fraction < 1:
        raise UserError(
            f"dataset.val_fraction / test_fraction={fraction} must be between 0 and 1 (they carve "
            "a split that has no folder)"
        )
    num_carved = max(1, round(fraction * len(samples)))
    if num_carved >= len(samples):
        raise UserError(f"{folder} has {len(samples)} images: too few to carve out a split")
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    kept = [samples[i] for i in sorted(order[num_carved:])]
    return kept, [samples[i] for i in sorted(order[:num_carved])]


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


def check_folder_classes(checkpoint: dict[str, Any], dataset: DictConfig, path: Path) -> None:
    """An image-folder run learned label k as the k-th class folder (sorted by name): the folder
    read now must hold the very classes the checkpoint names, or every label would mean another
    class (a renamed folder scored a perfect model 0.0; an added one broke resume=)."""
    names, root = checkpoint.get("class_names"), dataset.get("root")
    train = Path(str(root)).expanduser() if root else None
    train = train / "train" if train is not None and (train / "train").is_dir() else train
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
