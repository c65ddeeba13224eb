"""Shared fixtures: tiny real IDX files, config composition, and the shared MNIST folder."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dlcourse.config import config_dir, register_resolvers

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(os.environ.get("DLCOURSE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
NUM_TINY_TRAIN, NUM_TINY_TEST = 300, 100


@pytest.fixture(autouse=True)
def same_random_state_in_every_test():
    """Each test starts from the same random state whatever ran before it, so a result cannot hang
    on the order tests ran in. DLCOURSE_TEST_SEED=N tries another state (to look for fragile tests)."""
    torch.manual_seed(int(os.environ.get("DLCOURSE_TEST_SEED", "0")))


def write_idx(path: Path, array: torch.Tensor) -> None:
    """An IDX file as the MNIST release has it: magic (0, 0, type 0x08 = ubyte, ndim), sizes, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


def tiny_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images whose class is a bright horizontal band, so even tiny runs can learn them."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    images = torch.randint(0, 60, (count, 28, 28), generator=generator)
    for index, label in enumerate(labels.tolist()):
        images[index, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    return images, labels


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """A data folder holding MNIST/raw/ with four real IDX files of a few hundred images."""
    root = tmp_path_factory.mktemp("tiny_mnist")
    raw = root / "MNIST" / "raw"
    for prefix, count, seed in (("train", NUM_TINY_TRAIN, 0), ("t10k", NUM_TINY_TEST, 1)):
        images, labels = tiny_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


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


@pytest.fixture(scope="session")
def tiny_pairs(tmp_path_factory) -> Path:
    """A folder of 12 masked / complete / mask PNG triples."""
    return make_folder(tmp_path_factory.mktemp("tiny_pairs"))


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"real MNIST not found in {SHARED_MNIST} (set DLCOURSE_DATA_DIR to ../shared/data)")
    return SHARED_MNIST


def compose_config(overrides: list[str] = (), config_name: str = "train", hydra: bool = False) -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)


def quick_overrides(data_dir: Path, mnist_sizes: bool = True) -> list[str]:
    """A seconds-long run on the tiny data, on the CPU (`mnist_sizes`: the MNIST datasets' keys)."""
    sizes = ["dataset.val_size=50", "dataset.batch_size=32", "dataset.eval_batch_size=64"]
    return [
        f"paths.data_dir={data_dir}", *(sizes if mnist_sizes else []), "trainer.epochs=2",
        "trainer.device=cpu", "trainer.log_every_n_steps=2",
    ]
