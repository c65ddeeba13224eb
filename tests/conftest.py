"""Shared fixtures: tiny real IDX files, a folder of inpainting pairs, the shared MNIST folder,
and one fixed random state per test. The helpers they use are in helpers.py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import (
    NUM_TINY_TEST,
    NUM_TINY_TRAIN,
    SHARED_MNIST,
    make_folder,
    make_image_folder,
    tiny_digits,
    write_idx,
)


def pytest_configure(config) -> None:
    """Run as on a machine where nothing ran before: matplotlib builds its font cache anew (and
    logs that it did), which once broke a test that only a fresh machine showed (.ci/run points
    every per-user cache at an empty folder too)."""
    if "MPLCONFIGDIR" not in os.environ:
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="dlcourse-test-matplotlib-")


@pytest.fixture(autouse=True)
def same_random_state_in_every_test():
    """Each test starts from the same random state whatever ran before it, so a result cannot hang
    on the order tests ran in. DLCOURSE_TEST_SEED=N tries another state (to look for fragile
    tests)."""
    torch.manual_seed(int(os.environ.get("DLCOURSE_TEST_SEED", "0")))


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """A data folder holding MNIST/raw/ with four real IDX files of a few hundred images."""
    root = tmp_path_factory.mktemp("tiny_mnist")
    for name in ("MNIST", "FashionMNIST"):  # the same tiny images serve as both
        raw = root / name / "raw"
        for prefix, count, seed in (("train", NUM_TINY_TRAIN, 0), ("t10k", NUM_TINY_TEST, 1)):
            images, labels = tiny_digits(count, seed)
            write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def tiny_pairs(tmp_path_factory) -> Path:
    """A folder of 12 masked / complete / mask PNG triples."""
    return make_folder(tmp_path_factory.mktemp("tiny_pairs"))


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    """An image folder (train/ and test/, three colour classes) of mixed sizes and formats."""
    return make_image_folder(tmp_path_factory.mktemp("tiny_images"))


@pytest.fixture(scope="session")
def shared_fashion() -> Path:
    if not (SHARED_MNIST / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(
            f"real Fashion-MNIST not found in {SHARED_MNIST} (set DLCOURSE_DATA_DIR to "
            "../shared/data)"
        )
    return SHARED_MNIST


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(
            f"real MNIST not found in {SHARED_MNIST} (set DLCOURSE_DATA_DIR to ../shared/data)"
        )
    return SHARED_MNIST
