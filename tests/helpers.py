"""Helpers the tests share: tiny real data, config composition, running the installed commands,
reading TensorBoard logs. Fixtures that use them are in conftest.py."""

from __future__ import annotations

import copy
import gc
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from dlcourse.commands import console
from dlcourse.infrastructure.config import config_dir, register_resolvers

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(os.environ.get("DLCOURSE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
BIN = Path(sys.executable).parent  # the installed commands (dlcourse-train, ...) of this venv

# The tiny MNIST the `tiny_mnist` fixture writes, and the sizes `quick_overrides` runs it with.
NUM_TINY_TRAIN, NUM_TINY_TEST = 300, 100
TINY_VAL_SIZE, TINY_BATCH_SIZE, TINY_EPOCHS = 50, 32, 2
STEPS_PER_EPOCH = math.ceil((NUM_TINY_TRAIN - TINY_VAL_SIZE) / TINY_BATCH_SIZE)  # 250 / 32 → 8


def write_idx(path: Path, array: torch.Tensor) -> None:
    """An IDX file as MNIST has it: magic (0, 0, type 0x08 = ubyte, ndim), sizes, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + struct.pack(
        f">{array.dim()}I", *array.shape
    )
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


def tiny_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images whose class is a bright horizontal band, so even tiny runs can learn them."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    images = torch.randint(0, 60, (count, 28, 28), generator=generator)
    for index, label in enumerate(labels.tolist()):
        images[index, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    return images, labels


def make_folder(root, count=12, size=(28, 28), with_masks=True, mode="L"):
    """complete/ digits-like squares, masked/ with a black box, mask/ marking the box in white."""
    for name in ("masked", "complete", "mask"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        complete = torch.rand(size[1], size[0]) * 0.5 + 0.25
        mask = torch.zeros(size[1], size[0])
        mask[5:12, 5 + index % 10 : 12 + index % 10] = 1
        masked = complete * (1 - mask)
        for name, values in (("complete", complete), ("masked", masked), ("mask", mask)):
            if name == "mask" and not with_masks:
                continue
            image = Image.fromarray((values * 255).round().byte().numpy(), mode="L").convert(mode)
            image.save(root / name / f"img{index:02d}.png")
    if not with_masks:
        (root / "mask").rmdir()
    return root


IMAGE_CLASSES = ("blue", "green", "red")  # sorted, as the folder's classes come out


def make_image_folder(root: Path, train: int = 12, test: int = 4, val: int = 0) -> Path:
    """An ImageFolder layout of noisy pictures whose class is their dominant colour: sizes from
    20 to 44 pixels, PNG and JPEG, one grayscale and one half-transparent image per class."""
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", train), ("val", val), ("test", test)):
        for channel, name in enumerate(("red", "green", "blue")):
            folder = root / split / name
            for index in range(count):
                folder.mkdir(parents=True, exist_ok=True)
                height, width = torch.randint(20, 45, (2,), generator=generator).tolist()
                pixels = torch.randint(0, 90, (height, width, 3), generator=generator)
                pixels[..., channel] += 150
                image = Image.fromarray(pixels.byte().numpy(), mode="RGB")
                if index == 1:
                    image = image.convert("L")
                elif index == 2:
                    image = image.convert("RGBA")
                    image.putalpha(200)
                suffix = ".jpg" if index % 3 == 0 else ".png"
                image.save(folder / f"{split}_{index:03d}{suffix}")
    return root


def compose_config(
    overrides: list[str] = (), config_name: str = "train", hydra: bool = False
) -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(
            config_name=config_name, overrides=list(overrides), return_hydra_config=hydra
        )


def quick_overrides(data_dir: Path, mnist_sizes: bool = True) -> list[str]:
    """A seconds-long run on the tiny data, on the CPU (`mnist_sizes`: the MNIST datasets' keys)."""
    sizes = [
        f"dataset.val_size={TINY_VAL_SIZE}",
        f"dataset.batch_size={TINY_BATCH_SIZE}",
        "dataset.eval_batch_size=64",
    ]
    return [
        f"paths.data_dir={data_dir}",
        *(sizes if mnist_sizes else []),
        f"trainer.epochs={TINY_EPOCHS}",
        "trainer.device=cpu",
        "trainer.log_every_n_steps=2",
    ]


def run_command(
    command: list[str], cwd: Path, data_dir: Path | None = None
) -> subprocess.CompletedProcess:
    """An installed command (`["dlcourse-train", ...]`) in `cwd`, as a user would run it."""
    env = {**os.environ, "DLCOURSE_DATA_DIR": str(data_dir or cwd / "no-data-here")}
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def only_run_folder(parent: Path) -> Path:
    folders = list(parent.iterdir())
    assert len(folders) == 1, folders
    return folders[0]


def read_events(run_dir: Path):
    """A run's TensorBoard events (scalars, images, histograms), every point kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0}
    )
    events.Reload()
    return events


# The console commands, as their installed scripts start them (dlcourse.commands.console).
COMMANDS = {
    "dlcourse-train": console.train,
    "dlcourse-eval": console.evaluate,
    "dlcourse-predict": console.predict,
    "dlcourse-export": console.export,
    "dlcourse-sweep-report": console.sweep_report,
    "dlcourse-gradcheck": console.gradcheck,
    "dlcourse-summary": console.summary,
    "dlcourse-runs": console.runs,
    "dlcourse-compare": console.compare,
    "dlcourse-lr-find": console.lr_find,
}


def call(command: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run a console command in this process, as its installed script does: its exit status and
    everything it printed (much faster than a subprocess, so corpora of commands stay cheap)."""
    monkeypatch.setattr(sys, "argv", [command, *argv])
    monkeypatch.setenv(
        "HYDRA_FULL_ERROR", "1"
    )  # what dlcourse.commands.console sets, undone after the test
    try:
        COMMANDS[command]()
        status = 0
    except SystemExit as exited:
        status = exited.code if isinstance(exited.code, int) else 1
    finally:
        gc.unfreeze()  # dlcourse-train freezes every object as its process ends; this one goes on
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def collector_when_training_starts(monkeypatch) -> list[tuple[bool, int]]:
    """A list that each Trainer.fit, as it starts, appends to: whether the garbage collector is
    on, and how many objects are frozen (dlcourse.infrastructure.runtime.startup_objects_frozen)."""
    from dlcourse.trainer import Trainer

    seen: list[tuple[bool, int]] = []
    fit = Trainer.fit

    def fit_and_look(trainer):
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        return fit(trainer)

    monkeypatch.setattr(Trainer, "fit", fit_and_look)
    return seen


DELETE = "DELETE"  # as the value `replaced` puts at a place: remove the entry instead


def replaced(tree: dict, place: tuple, value: object) -> dict:
    """A deep copy of `tree` (a checkpoint, a config) with the entry at `place` (a path of keys
    and indices) set to `value`, or removed when `value` is DELETE and the entry is a mapping's."""
    crafted = copy.deepcopy(tree)
    parent = crafted
    for key in place[:-1]:
        parent = parent[key]
    if isinstance(value, str) and value == DELETE and isinstance(parent, dict):
        del parent[place[-1]]
    else:
        parent[place[-1]] = value
    return crafted
