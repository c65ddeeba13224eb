"""Where the images of an image folder are, and which split each belongs to.

    <root>/train/<class>/*.png|jpg|...   one folder per class, named after it (torchvision's
    <root>/test/<class>/...              ImageFolder layout); test/ holds the same classes
    <root>/val/<class>/...               optional: without it, val is carved from train

Without test/ (train/ and val/, as many datasets come), test is carved from train/; a single
folder of class folders (<root>/<class>/*.png) gives all three, test and val carved from it.
A carved test split is the same for every run of the folder (TEST_SEED); val is drawn by the
run's seed; the log says so. Links inside a class folder are followed (as torchvision does)
unless they lead out of the root; a link to nothing is named. Hidden files (.DS_Store, macOS's
._x.png) are left out, as hidden folders are, and counted in the log.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dlcourse.data.image_files import EXTENSIONS, Sample, report_skipped
from dlcourse.infrastructure.checkpoint import MAX_CLASS_NAME
from dlcourse.infrastructure.errors import UserError, printable

log = logging.getLogger(__name__)

TEST_SEED = 0  # draws a carved test split: one test set for every run of a folder


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
    # The test split is the same for every run of the folder, whatever its seed (seeds= compares
    # runs on one test set); val is drawn by the run's seed, as it always was.
    for split, fraction, draw in (("test", test_fraction, TEST_SEED), ("val", val_fraction, seed)):
        if split not in splits:
            splits["train"], splits[split] = carve(splits["train"], fraction, draw, train)
            total = len(splits["train"]) + len(splits[split])
            log.info(
                "%s: no %s/ folder, so %d of its %d images are the %s split "
                "(dataset.%s_fraction=%s, drawn by seed %d: the same each time)",
                train, split, len(splits[split]), total, split, split, fraction, draw,
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
