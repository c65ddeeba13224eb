"""dataset=image_folder against torchvision's ImageFolder + DataLoader: seconds per training epoch.

    python scripts/bench_image_folder.py [--images 10000] [--repeats 3] [--folder /tmp/images]

A generated folder of 32×32 RGB PNGs in 10 classes (written once, kept in --folder) is read for
one training epoch — batches of 128, shuffled, random crop with 4 pixels of padding, horizontal
flip, normalisation — three ways, interleaved round by round:
  torchvision: ImageFolder(transform=RandomCrop + RandomHorizontalFlip + ToTensor + Normalize)
               + DataLoader(num_workers=2, persistent workers), as its tutorials do;
  streamed:    dataset=image_folder dataset.cache_bytes=0 (DataLoader workers, transforms.v2);
  cached:      dataset=image_folder (decoded once into memory, augmented a batch at a time).
Each epoch is timed after one warm-up epoch (workers started); the cached path's one-off decode
is reported apart. Only the data is timed (no model): that is what differs. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from bench import machine_line, write_section  # scripts/bench.py, beside this file

from dlcourse.data.image_folder import image_folder

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def write_folder(root: Path, count: int) -> None:
    """`count` noisy 32×32 PNGs (90% train/, 10% test/), 10 classes by colour and position."""
    from PIL import Image

    if (root / "done").is_file():
        return
    generator = torch.Generator().manual_seed(0)
    for index in range(count):
        label = index % 10
        split = "test" if index % 10 == index // 10 % 10 else "train"
        pixels = torch.randint(0, 120, (32, 32, 3), generator=generator)
        pixels[3 * label : 3 * label + 6, :, label % 3] += 120
        folder = root / split / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.byte().numpy()).save(folder / f"{index:06d}.png")
    (root / "done").write_text("")


def torchvision_loader(root: Path):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    augment = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    dataset = datasets.ImageFolder(str(root / "train"), transform=augment)
    return DataLoader(dataset, batch_size=128, shuffle=True, num_workers=2, persistent_workers=True)


def ours(root: Path, cache_bytes: int):
    settings = {"crop_padding": 4, "horizontal_flip": True, "mean": list(MEAN), "std": list(STD)}
    data = image_folder(
        str(root), image_size=32, batch_size=128, num_workers=2, cache_bytes=cache_bytes,
        val_fraction=0.01, **settings,
    )  # fmt: skip
    return data.train


def epoch_seconds(batches, epoch: int) -> float:
    if hasattr(batches, "set_epoch"):
        batches.set_epoch(epoch)
    start = time.perf_counter()
    count = sum(len(labels) for _, labels in batches)
    assert count > 0
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/dlcourse-bench-images"))
    args = parser.parse_args()
    write_folder(args.folder, args.images)
    start = time.perf_counter()
    loaders = {"cached": ours(args.folder, 10**10)}
    decode_seconds = time.perf_counter() - start
    loaders |= {"torchvision": torchvision_loader(args.folder), "streamed": ours(args.folder, 0)}
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for batches in loaders.values():
        epoch_seconds(batches, 0)  # warm-up: workers started, files in the page cache
    for round_number in range(1, args.repeats + 1):
        for name, batches in loaders.items():
            times[name].append(epoch_seconds(batches, round_number))
        print({name: round(values[-1], 3) for name, values in times.items()}, flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = medians["torchvision"]
    lines = [
        machine_line(args.repeats),
        f"Command: `python scripts/bench_image_folder.py --images {args.images} --repeats "
        f"{args.repeats}`; one training epoch of the {sum(1 for _ in args.folder.rglob('*.png'))}"
        " generated 32×32 PNGs' train/ split, batch 128, crop (padding 4) + flip + normalise.",
        "",
        "| loader | seconds per epoch (median) | all rounds | ratio to torchvision | goal |",
        "| --- | --- | --- | --- | --- |",
    ]
    goals = {"torchvision": "—", "streamed": "≤ 1.1", "cached": "≤ 0.2"}
    for name, median in medians.items():
        rounds = ", ".join(f"{v:.2f}" for v in times[name])
        ratio = median / reference
        lines.append(f"| {name} | {median:.3f} | {rounds} | {ratio:.3f} | {goals[name]} |")
    lines += ["", f"The cached path decoded every image once first, in {decode_seconds:.1f} s."]
    print("\n".join(lines))
    write_section("image-folder", lines)
    met = medians["cached"] <= 0.2 * reference and medians["streamed"] <= 1.1 * reference
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
