"""dataset=image_folder: your own images, one folder per class, cached on the device or streamed;
models built for whatever the data holds; class names and preprocessing carried to predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy
import pytest
import torch
from helpers import IMAGE_CLASSES, compose_config, make_image_folder, quick_overrides, run_command
from PIL import Image

from dlcourse.data.augment import Augmentation, horizontal_flip, padded_crop, random_resized_crop
from dlcourse.data.image_folder import image_folder
from dlcourse.data.image_layout import find_splits
from dlcourse.infrastructure.errors import DataError, UserError
from dlcourse.run import train


def folder_data(root: Path, **settings):
    settings = {
        "image_size": 32,
        "batch_size": 8,
        "eval_batch_size": 5,
        "num_workers": 0,
    } | settings
    return image_folder(str(root), **settings)


def pil_pixels(path: Path, size: int = 32) -> numpy.ndarray:
    """An image as the folder should read it, by PIL alone: RGB over white, resized, in [0, 1]."""
    with Image.open(path) as image:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
        return numpy.asarray(image.resize((size, size), Image.Resampling.BILINEAR)) / 255.0


def test_classes_splits_and_normalisation_come_from_the_folder(tiny_images):
    data = folder_data(tiny_images)
    assert data.task.class_names == list(IMAGE_CLASSES)
    assert data.input_shape == (3, 32, 32)
    # val: 10% of the 36 training images, carved by the seed; test: the 12 of test/
    assert (len(data.train.tensors[0]), len(data.val.tensors[0]), len(data.test.tensors[0])) == (
        32,
        4,
        12,
    )
    _, train_samples, _, test_samples = find_splits(tiny_images, 0.1, seed=0)
    pixels = numpy.stack([pil_pixels(path) for path, _ in train_samples])  # (32, 32, 32, 3)
    numpy.testing.assert_allclose(data.found["mean"], pixels.mean(axis=(0, 1, 2)), atol=2e-3)
    numpy.testing.assert_allclose(data.found["std"], pixels.std(axis=(0, 1, 2)), atol=2e-3)
    shape = {"channels": 3, "image_size": 32, "resize": "squash"}  # the function's default
    assert data.preprocessing == {"kind": "image", **shape, **data.found}
    # A test input is the file, decoded by PIL, standardised with the measured numbers.
    images, labels = next(iter(data.test))
    first = pil_pixels(test_samples[0][0])
    expected = (first - numpy.array(data.found["mean"])) / numpy.array(data.found["std"])
    numpy.testing.assert_allclose(images[0].permute(1, 2, 0).numpy(), expected, atol=1e-4)
    assert labels[0].item() == IMAGE_CLASSES.index(test_samples[0][0].parent.name)


def batches_of(batches) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*batches)
    return torch.cat(images), torch.cat(labels)


def test_cached_and_streamed_paths_give_the_same_inputs(tiny_images):
    """Decoded once into memory or by DataLoader workers (two, as a user would): the same
    evaluation inputs, and the same training images (in whichever order)."""
    cached = folder_data(tiny_images)
    streamed = folder_data(tiny_images, cache_bytes=0, num_workers=2)
    assert type(cached.train).__name__ == "CachedImages"
    assert type(streamed.train).__name__ == "StreamedImages"
    assert streamed.found == cached.found  # every image measured: fewer than the sample size
    for split in ("val", "test"):
        expected, streamed_batches = (
            batches_of(getattr(cached, split)),
            batches_of(getattr(streamed, split)),
        )
        torch.testing.assert_close(streamed_batches[0], expected[0], atol=1e-5, rtol=0)
        assert torch.equal(streamed_batches[1], expected[1])
    cached_train, streamed_train = batches_of(cached.train), batches_of(streamed.train)
    by_sum = lambda images: images.flatten(1).sum(1).sort().values  # noqa: E731
    torch.testing.assert_close(
        by_sum(streamed_train[0]), by_sum(cached_train[0]), atol=1e-3, rtol=0
    )
    assert torch.equal(streamed_train[1].sort().values, cached_train[1].sort().values)


def test_val_folder_is_used_when_there_is_one(tmp_path):
    root = make_image_folder(tmp_path / "images", train=6, test=2, val=2)
    data = folder_data(root)
    assert len(data.val.tensors[0]) == 6 and len(data.train.tensors[0]) == 18


def test_augmentations_transform_each_image_with_its_own_draw():
    ramp = torch.arange(16.0).expand(4, 3, 16, 16) / 15  # value = column / 15, in every image
    generator = torch.Generator().manual_seed(0)
    # Padded crop: each image is a 16×16 window of the zero-padded image, at its own offset.
    cropped = padded_crop(ramp, 4, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(ramp, (4,) * 4)
    offsets = set()
    for image in cropped:
        windows = [
            (top, left)
            for top in range(9)
            for left in range(9)
            if torch.equal(image, padded[0, :, top : top + 16, left : left + 16])
        ]
        assert windows, "a crop that is no window of the padded image"
        offsets.add(windows[0])
    assert len(offsets) > 1  # not one offset for the whole batch
    # Flip: each image is itself or its mirror image; in a large batch, about half are mirrored.
    many = torch.arange(16.0).expand(1000, 1, 2, 16).clone()
    flipped = horizontal_flip(many, generator)
    mirrored = (flipped[:, 0, 0, 0] == 15).float()
    assert torch.equal(flipped[mirrored == 1], many[mirrored == 1].flip(-1))
    assert torch.equal(flipped[mirrored == 0], many[mirrored == 0])
    assert 0.4 < mirrored.mean() < 0.6
    # Resized crop: columns stay in order (no flip), inside the image, covering at least the
    # smallest share of it that `scale` allows; and each image has its own crop.
    crops = random_resized_crop(ramp, (0.25, 0.5), generator)
    assert crops.shape == ramp.shape
    assert (crops[:, :, :, 1:] >= crops[:, :, :, :-1] - 1e-6).all()
    widths = crops[:, 0, 0, -1] - crops[:, 0, 0, 0]  # the share of the width each crop covers
    assert ((widths > 0.25) & (widths < 1.0)).all() and len(set(widths.tolist())) == 4


def test_the_streamed_path_uses_torchvision_transforms_v2():
    from torchvision.transforms import v2

    chosen = Augmentation(crop_padding=4, horizontal_flip=True, resized_crop_scale=(0.5, 1.0))
    kinds = [type(t) for t in chosen.transforms(32)]
    assert kinds == [v2.RandomResizedCrop, v2.RandomCrop, v2.RandomHorizontalFlip]
    assert not Augmentation() and Augmentation().transforms(32) == []


def test_cached_augmentation_is_the_same_after_a_resume(tiny_images):
    """The batch's random draw is seeded by epoch and batch, so skipping ahead (a resumed run)
    gives the very batches an uninterrupted epoch would."""
    data = folder_data(tiny_images, crop_padding=4, horizontal_flip=True)
    data.train.set_epoch(3)
    whole = list(data.train)
    data.train.set_epoch(3, start_batch=2)
    resumed = list(data.train)
    for (images, labels), (again, again_labels) in zip(whole[2:], resumed):
        assert torch.equal(images, again) and torch.equal(labels, again_labels)
    data.train.set_epoch(4)
    assert not torch.equal(next(iter(data.train))[0], whole[0][0])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: shutil.rmtree(root / "train"), "has test/ but no train/ folder"),
        (lambda root: (root / "train" / "purple").mkdir(), "purple holds no images"),
        (lambda root: shutil.rmtree(root / "test" / "red"), "missing red"),
        (
            lambda root: shutil.copytree(root / "test" / "red", root / "test" / "teal"),
            "not in train/: teal",
        ),
        (lambda root: (root / "train" / "red" / "x.png").write_text("no image"), "x.png"),
    ],
    ids=["no-train", "empty-class", "class-missing", "class-extra", "not-an-image"],
)
@pytest.mark.parametrize("cache_bytes", [10**9, 0], ids=["cached", "streamed"])
def test_a_bad_folder_is_one_line_naming_it(tmp_path, damage, message, cache_bytes):
    root = make_image_folder(tmp_path / "images", train=3, test=1)
    damage(root)
    with pytest.raises(UserError, match=message) as caught:
        folder_data(root, cache_bytes=cache_bytes)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("cache_bytes", [10**9, 0], ids=["cached", "streamed"])
def test_unreadable_images_stop_or_are_skipped_and_counted(tmp_path, caplog, cache_bytes):
    root = make_image_folder(tmp_path / "images", train=4, test=2)
    truncated = root / "train" / "green" / "train_001.png"
    truncated.write_bytes(truncated.read_bytes()[:60])  # a header, then nothing
    (root / "test" / "red" / "notes.png").write_text("not an image")
    with pytest.raises(UserError, match="cannot read image .*(train_001|notes).png.*on_bad_image"):
        data = folder_data(root, cache_bytes=cache_bytes)
        list(data.train)  # streamed: the truncated file fails when it is decoded
    data = folder_data(root, cache_bytes=cache_bytes, on_bad_image="skip")
    for split in (data.train, data.val, data.test):
        list(split)
    total = sum(len(labels) for split in (data.train, data.val, data.test) for _, labels in split)
    assert total == 12 + 6 + 1 - 2  # train, test and notes.png, less the two bad ones
    assert "skipped" in caplog.text and "notes.png" in caplog.text and "train_001" in caplog.text


def test_an_image_that_breaks_mid_run_stops_after_saving_the_run(tiny_mnist, tmp_path):
    """Streamed from disk, a file that no longer decodes in epoch 2 stops the run with its name;
    the run's place is saved, and once the file is fixed the run resumes and finishes."""
    root = make_image_folder(tmp_path / "images", train=8, test=2)
    victim = root / "train" / "blue" / "train_004.png"
    original = victim.read_bytes()
    settings = [
        *quick_overrides(tiny_mnist, mnist_sizes=False),
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.cache_bytes=0",
        "dataset.num_workers=0",
        "dataset.batch_size=4",
        "model=linear",
        "trainer.epochs=3",
        "trainer.progress_bar=false",
    ]
    cfg = compose_config(settings)
    from dlcourse.data import image_files

    real_decode, calls = image_files.decode_image, {"count": 0}

    def decode_then_break(path, *args, **kwargs):  # the file is damaged once epoch 1 is done
        calls["count"] += 1
        if calls["count"] == 30:
            victim.write_bytes(original[:70])
        return real_decode(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_files, "decode_image", decode_then_break)
        with pytest.raises(DataError, match="train_004.png.*saved its place.*resume="):
            train(cfg, tmp_path / "run")
    from dlcourse.infrastructure.checkpoint import load_checkpoint

    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["step"] > 0
    victim.write_bytes(original)
    resumed = compose_config([*settings, f"resume={tmp_path / 'run'}"])
    from dlcourse.resume import run_config

    resumed, checkpoint = run_config(resumed, [f"resume={tmp_path / 'run'}"], tmp_path / "run")
    metrics = train(resumed, tmp_path / "run", checkpoint=checkpoint)
    assert metrics["epochs_run"] == 3


@pytest.mark.parametrize("model", ["linear", "mlp", "cnn"])
@pytest.mark.parametrize("channels", [1, 3])
def test_models_are_built_for_the_data(tiny_mnist, tiny_images, tmp_path, model, channels):
    """No size repeated on the command line: the folder's channels, image size and classes build
    the model, and the run's checkpoint records them."""
    cfg = compose_config(
        [
            *quick_overrides(tiny_mnist, mnist_sizes=False),
            "dataset=image_folder",
            f"dataset.root={tiny_images}",
            f"dataset.channels={channels}",
            "dataset.image_size=24",
            f"model={model}",
            "trainer.epochs=1",
            "trainer.progress_bar=false",
        ]
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["class_names"] == list(IMAGE_CLASSES)
    from dlcourse.infrastructure.checkpoint import load_checkpoint

    stored = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["config"]["model"]
    expected = {"in_channels": channels, "image_size": 24, "num_classes": 3}
    if model != "cnn":
        expected = {"input_size": channels * 24 * 24, "num_classes": 3}
    assert {key: stored[key] for key in expected} == expected


def test_an_explicit_size_wins_and_a_wrong_one_is_one_line(tiny_mnist, tiny_images, tmp_path):
    settings = [
        *quick_overrides(tiny_mnist, mnist_sizes=False),
        "dataset=image_folder",
        f"dataset.root={tiny_images}",
        "model=linear",
        "model.input_size=784",
    ]
    with pytest.raises(UserError, match="cannot take this dataset's batches") as caught:
        train(compose_config(settings), tmp_path / "run")
    assert "\n" not in str(caught.value)


def test_alexnet_trains_on_a_folder_of_64_pixel_photos(tiny_mnist, tiny_images, tmp_path):
    cfg = compose_config(
        [
            *quick_overrides(tiny_mnist, mnist_sizes=False),
            "dataset=image_folder",
            f"dataset.root={tiny_images}",
            "dataset.image_size=64",
            "dataset.batch_size=8",
            "dataset.horizontal_flip=true",
            "model=alexnet",
            "trainer.epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.progress_bar=false",
        ]
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["steps"] == 2 and 0 <= metrics["test/acc"] <= 1


def test_train_predict_and_eval_on_a_folder_from_the_command_line(tiny_images, tmp_path):
    """What a new user types: train on their folder, then ask the run about a photo (by class
    name) and evaluate it again, with the normalisation the run measured."""
    result = run_command(
        [
            "dlcourse-train",
            "dataset=image_folder",
            f"dataset.root={tiny_images}",
            "model=cnn",
            "trainer.epochs=3",
            f"paths.output_dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = next((tmp_path / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_names"] == list(IMAGE_CLASSES)
    photo = tmp_path / "photo.png"
    reddish = torch.randint(0, 90, (50, 70, 3))
    reddish[..., 0] += 160
    Image.fromarray(reddish.byte().numpy(), mode="RGB").save(photo)
    predicted = run_command(["dlcourse-predict", str(run), str(photo), "--json"], cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    top = json.loads(predicted.stdout)[0]["top"][0]
    assert top["name"] == IMAGE_CLASSES[top["class"]]
    evaluated = run_command(["dlcourse-eval", f"ckpt_path={run}"], cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    again = json.loads((run / "checkpoints" / "best.test.json").read_text())
    assert again["test/acc"] == pytest.approx(metrics["test/acc"])


def test_predict_prepares_a_photo_as_the_folder_prepared_its_images(tiny_images, tmp_path):
    from dlcourse.data.new_images import prepare_input

    data = folder_data(tiny_images)
    _, _, _, test_samples = find_splits(tiny_images, 0.1, seed=0)
    image, found = prepare_input(test_samples[0][0], data.preprocessing)
    torch.testing.assert_close(image, next(iter(data.test))[0][0], atol=1e-5, rtol=0)
    assert found


def write_png_folder(root: Path, split: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Images (N, 28, 28) uint8 as PNGs in <root>/<split>/<label>_<name>/ (sorted as labelled)."""
    from dlcourse.data.idx_files import FASHION

    for index, (pixels, label) in enumerate(zip(images, labels.tolist())):
        name = FASHION.class_names[label].replace("/", "-")
        folder = root / split / f"{label}_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.numpy(), mode="L").save(folder / f"{index:05d}.png")


def test_fashion_mnist_as_a_png_folder_scores_as_the_idx_files_do(shared_fashion, tmp_path):
    """3,000 training, 1,000 validation and all 10,000 test images of Fashion-MNIST written as
    PNG folders: the same model, seed and epochs reach the same test accuracy through
    dataset=image_folder as through the IDX files (within 0.3 points). Full-batch steps make the
    image order irrelevant (the folder lists images by class, the IDX file in its own order)."""
    from dlcourse.data.idx_files import FASHION
    from dlcourse.data.mnist import open_mnist

    files = open_mnist(str(shared_fashion), 1000, False, 0, train_subset=3000, spec=FASHION)
    root = tmp_path / "fashion"
    for split, indices in (("train", files.train_indices), ("val", files.val_indices)):
        write_png_folder(root, split, files.train.data[indices], files.train.targets[indices])
    write_png_folder(root, "test", files.test.data, files.test.targets)
    common = [
        f"paths.data_dir={shared_fashion}",
        "experiment=linear_fashion_mnist",
        "dataset.batch_size=3000",
        "trainer.epochs=30",
        "optimizer.lr=0.2",
        "trainer.device=cpu",
        "trainer.progress_bar=false",
    ]
    idx = compose_config([*common, "dataset.val_size=1000", "dataset.train_subset=3000"])
    folder = compose_config(
        [
            *common,
            "dataset=image_folder",
            f"dataset.root={root}",
            "dataset.channels=1",
            "dataset.image_size=28",
            f"dataset.mean=[{FASHION.mean}]",
            f"dataset.std=[{FASHION.std}]",
            "dataset.batch_size=3000",
            "dataset.eval_batch_size=1000",
        ]
    )
    from_idx = train(idx, tmp_path / "idx")["test/acc"]
    from_folder = train(folder, tmp_path / "folder")["test/acc"]
    assert from_idx > 0.7, from_idx  # it learned something worth comparing
    assert abs(from_folder - from_idx) <= 0.003, (from_folder, from_idx)


def test_the_batch_resized_crop_draws_crops_as_torchvision_v2_does():
    """Over 2,000 draws, the share of the width and height that a crop covers has the same mean
    and spread as v2.RandomResizedCrop's (scale [0.25, 0.5], aspect ratios 3/4 to 4/3)."""
    ramps = torch.stack(
        [torch.arange(16.0).expand(16, 16), torch.arange(16.0)[:, None].expand(16, 16)]
    )  # channel 0 rises along the columns, channel 1 down the rows
    (v2_crop,) = Augmentation(resized_crop_scale=(0.25, 0.5)).transforms(16)
    theirs = torch.stack([v2_crop(ramps) for _ in range(2000)])
    ours = random_resized_crop(
        ramps.expand(2000, -1, -1, -1), (0.25, 0.5), torch.Generator().manual_seed(0)
    )

    def covered(crops: torch.Tensor) -> torch.Tensor:
        width = (crops[:, 0, 8, -1] - crops[:, 0, 8, 0]) / 15  # share of the width covered
        height = (crops[:, 1, -1, 8] - crops[:, 1, 0, 8]) / 15
        return torch.stack([width.mean(), width.std(), height.mean(), height.std()])

    torch.testing.assert_close(covered(ours), covered(theirs), atol=0.03, rtol=0)
