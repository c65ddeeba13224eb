"""The MNIST loader on real IDX files, the fast batch iterator, and the missing-data message."""

from __future__ import annotations

import pytest
import torch
from helpers import NUM_TINY_TEST, NUM_TINY_TRAIN, tiny_digits

from dlcourse.data import TensorBatches
from dlcourse.data.idx_files import FILES, MEAN, STD, read_idx
from dlcourse.data.mnist import fashion_mnist, mnist
from dlcourse.infrastructure.errors import UserError


def test_reads_idx_files_into_normalised_splits(tiny_mnist):
    data = mnist(str(tiny_mnist), batch_size=32, eval_batch_size=64, val_size=50, seed=0)
    assert data.train.num_samples == NUM_TINY_TRAIN - 50
    assert data.val.num_samples == 50 and data.test.num_samples == NUM_TINY_TEST
    images, labels = data.test.tensors
    assert images.shape == (NUM_TINY_TEST, 1, 28, 28) and images.dtype == torch.float32
    expected_images, expected_labels = tiny_digits(NUM_TINY_TEST, seed=1)
    torch.testing.assert_close(images[:, 0], (expected_images.float() / 255 - MEAN) / STD)
    assert torch.equal(labels, expected_labels)


def test_validation_split_is_fixed_by_the_seed_and_disjoint_from_train(tiny_mnist):
    def split_images(seed):
        data = mnist(str(tiny_mnist), val_size=50, seed=seed)
        return data.train.tensors[0], data.val.tensors[0]

    train_a, val_a = split_images(seed=3)
    train_b, val_b = split_images(seed=3)
    _, val_c = split_images(seed=4)
    assert torch.equal(val_a, val_b) and torch.equal(train_a, train_b)
    assert not torch.equal(val_a, val_c)
    # No validation image also sits in the training split (the tiny images are all distinct).
    flat_train, flat_val = train_a.flatten(1), val_a.flatten(1)
    assert not (torch.cdist(flat_val, flat_train).min(dim=1).values == 0).any()


def epoch_order(batches: TensorBatches, epoch: int) -> torch.Tensor:
    batches.set_epoch(epoch)
    return torch.cat([ids for (ids,) in batches])


def test_batches_yield_every_sample_once_in_a_new_order_each_epoch():
    batches = TensorBatches((torch.arange(103),), batch_size=10, shuffle=True, seed=7)
    assert len(batches) == 11
    first, second = epoch_order(batches, 1), epoch_order(batches, 2)
    assert sorted(first.tolist()) == list(range(103)) == sorted(second.tolist())
    assert not torch.equal(first, second)
    again = TensorBatches((torch.arange(103),), batch_size=10, shuffle=True, seed=7)
    assert torch.equal(epoch_order(again, 1), first) and torch.equal(epoch_order(again, 2), second)
    other_seed = TensorBatches((torch.arange(103),), batch_size=10, shuffle=True, seed=8)
    assert not torch.equal(epoch_order(other_seed, 1), first)


def test_batches_keep_tensors_aligned():
    images, labels = torch.arange(50).float(), torch.arange(50) * 2
    for batch_images, batch_labels in TensorBatches((images, labels), batch_size=8, shuffle=True):
        assert torch.equal(batch_labels, batch_images.long() * 2)


def test_dataloader_path_gives_the_same_samples(tiny_mnist):
    fast = mnist(str(tiny_mnist), val_size=50, eval_batch_size=64, loader="tensor")
    classic = mnist(str(tiny_mnist), val_size=50, eval_batch_size=64, loader="dataloader")
    for (fast_images, fast_labels), (images, labels) in zip(fast.test, classic.test):
        torch.testing.assert_close(fast_images, images)
        assert torch.equal(fast_labels, labels)
    classic.train.set_epoch(1)
    assert sum(labels.shape[0] for _, labels in classic.train) == NUM_TINY_TRAIN - 50


def test_missing_data_names_the_folder_the_files_and_the_fix(tmp_path):
    with pytest.raises(UserError) as raised:
        mnist(str(tmp_path / "nowhere"), download_missing=False)
    message = str(raised.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert all(name in message for name in FILES)
    assert "DLCOURSE_DATA_DIR" in message


def test_failed_download_gives_the_same_clear_message(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    # A closed port on this machine: the download fails at once, without touching the internet.
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(UserError, match="download failed") as raised:
        mnist(str(tmp_path), download_missing=True)
    assert "train-images-idx3-ubyte" in str(raised.value)


def test_bad_val_size_is_refused(tiny_mnist):
    with pytest.raises(UserError, match="dataset.val_size=300 must be between 1 and 299"):
        mnist(str(tiny_mnist), val_size=NUM_TINY_TRAIN)


def test_missing_fashion_mnist_names_its_own_folder_and_download(tmp_path):
    with pytest.raises(UserError) as raised:
        fashion_mnist(str(tmp_path / "nowhere"), download_missing=False)
    message = str(raised.value)
    assert str(tmp_path / "nowhere" / "FashionMNIST" / "raw") in message
    assert "torchvision.datasets.FashionMNIST('data', download=True)" in message
    assert "\n" not in message


def test_fashion_mnist_reads_its_files_with_its_classes_and_normalisation(tiny_mnist):
    """The same IDX path as MNIST, from FashionMNIST/raw/, standardised with Fashion-MNIST's own
    mean and standard deviation, its classes named."""
    data = fashion_mnist(str(tiny_mnist), val_size=50, batch_size=32)
    assert data.task.class_names[0] == "T-shirt/top" and data.task.class_names[9] == "Ankle boot"
    assert data.preprocessing == {"kind": "fashion", "mean": [0.2860], "std": [0.3530]}
    images, _ = data.test.tensors
    raw = read_idx(tiny_mnist / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte")
    torch.testing.assert_close(images[:, 0] * 0.3530 + 0.2860, raw.float() / 255)


def test_fashion_mnist_constants_are_those_of_the_real_training_images(shared_fashion):
    data = fashion_mnist(str(shared_fashion), val_size=5000)
    raw = read_idx(shared_fashion / "FashionMNIST" / "raw" / "train-images-idx3-ubyte")
    pixels = raw.double() / 255
    assert abs(pixels.mean().item() - 0.2860) < 5e-5 and abs(pixels.std().item() - 0.3530) < 5e-5
    assert len(data.test.tensors[0]) == 10000 and len(data.train.tensors[0]) == 55000
    assert torch.bincount(data.test.tensors[1]).tolist() == [1000] * 10


def test_idx_training_images_can_be_flipped_each_on_its_own(tiny_mnist):
    """horizontal_flip on the tensor path: each training image arrives standardised as it is or
    mirrored (about half of each), evaluation images never; the same draw on a resume."""
    plain = fashion_mnist(str(tiny_mnist), val_size=50, batch_size=250)
    flipped = fashion_mnist(str(tiny_mnist), val_size=50, batch_size=250, horizontal_flip=True)
    (images, labels), (augmented, same_labels) = next(iter(plain.train)), next(iter(flipped.train))
    assert torch.equal(labels, same_labels)  # the same order: only the pixels change
    as_is = (augmented - images).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (augmented - images.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (as_is | mirrored).all() and 0.3 < mirrored.float().mean() < 0.7
    assert torch.equal(next(iter(flipped.test))[0], next(iter(plain.test))[0])
    flipped.train.set_epoch(0)
    assert torch.equal(next(iter(flipped.train))[0], augmented)
