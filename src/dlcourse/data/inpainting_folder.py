"""Inpainting pairs read from disk: a folder with masked/ and complete/ (and optionally mask/).

Files pair up by name (without the extension); any format PIL reads, grayscale or RGB, resized
to `image_size`. Everything is checked before training starts, and the pairs are then read item
by item through the standard `DataLoader` path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from dlcourse.data.batches import DataSplits, LoaderBatches
from dlcourse.data.image_decoding import read_image
from dlcourse.infrastructure.errors import UserError
from dlcourse.tasks import InpaintingTask

Pair = tuple[Path, Path, Path | None]  # masked, complete, mask (None: derived from the difference)


class PairFolder(Dataset):
    """(masked, complete, mask) tensors, each file decoded when the DataLoader asks for it."""

    def __init__(self, pairs: list[Pair], image_size: int | None, channels: int) -> None:
        self.pairs = pairs
        self.image_size = image_size
        self.mode = "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masked_path, complete_path, mask_path = self.pairs[index]
        masked = read_image(masked_path, self.mode, self.image_size)
        complete = read_image(complete_path, self.mode, self.image_size)
        if mask_path is not None:
            mask = (read_image(mask_path, "L", self.image_size, resample="nearest") > 0.5).float()
        else:  # a hole is wherever the masked image differs from the complete one
            mask = ((masked - complete).abs().amax(dim=0, keepdim=True) > 1.5 / 255).float()
        return masked, complete, mask


def find_pairs(root: Path) -> list[Pair]:
    """Match masked/, complete/ and mask/ by file name; refuse files left unmatched, by name."""
    folders = {name: root / name for name in ("masked", "complete", "mask")}
    for name in ("masked", "complete"):
        if not folders[name].is_dir() or not any(folders[name].iterdir()):
            raise UserError(
                f"{folders[name]} is missing or empty: an inpainting folder needs masked/ and "
                f"complete/ with matching file names"
            )
    files = {name: files_by_stem(folder) for name, folder in folders.items() if folder.is_dir()}
    names = set(files["masked"])
    for name, by_stem in files.items():
        unmatched = sorted(names.symmetric_difference(by_stem))
        if unmatched:
            raise UserError(
                f"{len(unmatched)} file name(s) in {root} do not match between masked/ and "
                f"{name}/: {', '.join(unmatched[:5])}. Every image needs one file in each folder"
            )
    masks = files.get("mask", {})
    return [
        (files["masked"][stem], files["complete"][stem], masks.get(stem)) for stem in sorted(names)
    ]


def files_by_stem(folder: Path) -> dict[str, Path]:
    """The folder's files by name without extension; two files of one name (3.png, 3.jpg) clash."""
    by_stem: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.stem in by_stem:
            raise UserError(
                f"{folder} holds both {by_stem[path.stem].name} and {path.name}: files pair up by "
                f"name without extension, so keep one of them"
            )
        by_stem[path.stem] = path
    return by_stem


def check_pairs(pairs: list[Pair], image_size: int | None) -> None:
    """Every file opens, the files of a pair share one size, and without resizing all do."""
    from PIL import Image

    sizes = set()
    for pair in pairs:
        pair_sizes = {}
        for path in (p for p in pair if p is not None):
            try:
                with Image.open(path) as image:
                    image.load()
                    pair_sizes[path] = image.size
            except Exception as error:  # PIL raises several types for unreadable files
                raise UserError(f"cannot read image {path}: {error}") from None
        if len(set(pair_sizes.values())) > 1:
            described = ", ".join(
                f"{p.parent.name}/{p.name} is {w}×{h}" for p, (w, h) in pair_sizes.items()
            )
            raise UserError(
                f"the images of one pair differ in size ({described}); they must match to be "
                f"resized together"
            )
        sizes |= set(pair_sizes.values())
    if image_size is None and len(sizes) > 1:
        raise UserError(
            f"the images come in {len(sizes)} sizes {sorted(sizes)[:4]}; set dataset.image_size to "
            f"resize them"
        )


def inpainting_folder(
    data_dir: str,
    batch_size: int = 32,
    eval_batch_size: int = 128,
    image_size: int | None = 28,
    channels: int = 1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    num_workers: int = 0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DataSplits:
    """Pairs from `data_dir`, split into train / val / test by the fractions (fixed by the seed)."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserError(
            f"inpainting folder {root} does not exist; set dataset.data_dir to a folder with "
            f"masked/ and complete/"
        )
    pairs = find_pairs(root)
    check_pairs(pairs, image_size)
    train, val, test = (
        PairFolder(part, image_size, channels)
        for part in split_pairs(pairs, val_fraction, test_fraction, seed, root)
    )
    mean_image = torch.stack([train[i][1] for i in range(len(train))]).mean(dim=0)
    return DataSplits(
        train=LoaderBatches(train, batch_size, shuffle=True, seed=seed, num_workers=num_workers),
        val=LoaderBatches(val, eval_batch_size, shuffle=False, num_workers=num_workers),
        test=LoaderBatches(test, eval_batch_size, shuffle=False, num_workers=num_workers),
        task=InpaintingTask(mean_image=mean_image.to(device)),
        input_shape=tuple(mean_image.shape),
    )


def split_pairs(
    pairs: list[Pair], val_fraction: float, test_fraction: float, seed: int, root: Path
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Train, val and test pairs, drawn by the seed; at least one pair in each."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    num_test = max(1, round(test_fraction * len(pairs)))
    num_val = max(1, round(val_fraction * len(pairs)))
    if num_test + num_val >= len(pairs):
        raise UserError(
            f"{root} has {len(pairs)} pairs: too few for a train, a val and a test split"
        )
    ordered = [pairs[i] for i in order]
    return ordered[num_test + num_val :], ordered[num_test : num_test + num_val], ordered[:num_test]
