"""Image folders as torchvision users have them (issue #27, point 4): train/ + val/ without test/,
one folder of class folders, linked subfolders, photos that are not square, hidden files, and
class names in other scripts drawn as letters."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_image_folder
from PIL import Image

from dlcourse.data.image_decoding import decode_image
from dlcourse.data.image_folder import image_folder
from dlcourse.infrastructure.errors import UserError


def folder_data(root: Path, **settings):
    defaults = {"image_size": 16, "batch_size": 8, "eval_batch_size": 5, "num_workers": 0}
    return image_folder(str(root), **(defaults | settings))


def images_in(split) -> int:
    return sum(len(labels) for _, labels in split)


def test_train_and_val_without_test_carve_test_from_train_by_the_seed(tmp_path, caplog):
    root = make_image_folder(tmp_path / "images", train=10, test=0, val=2)
    shutil.rmtree(root / "test", ignore_errors=True)
    with caplog.at_level(logging.INFO):
        data = folder_data(root, test_fraction=0.2)
    assert (images_in(data.train), images_in(data.val), images_in(data.test)) == (24, 6, 6)
    assert "no test/ folder, so 6 of its 30 images are the test split" in caplog.text
    # Every run of the folder tests on the same images, whatever its seed (seeds= compares runs
    # on one test set), and eval and resume carve them again the same.
    other = folder_data(root, test_fraction=0.2, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(data.test.tensors, other.test.tensors))  # uint8


def test_one_folder_of_class_folders_gives_all_three_splits(tmp_path, caplog):
    make_image_folder(tmp_path / "made", train=10, test=0)
    root = tmp_path / "made" / "train"  # red/, green/, blue/ and nothing else
    with caplog.at_level(logging.INFO):
        data = folder_data(root)
    assert data.task.class_names == ["blue", "green", "red"]
    assert (images_in(data.train), images_in(data.val), images_in(data.test)) == (24, 3, 3)
    assert "test split" in caplog.text and "val split" in caplog.text


def test_val_and_test_without_train_is_refused_in_one_line(tmp_path):
    root = make_image_folder(tmp_path / "images", train=3, test=2, val=2)
    shutil.rmtree(root / "train")
    with pytest.raises(UserError, match="has val/, test/ but no train/ folder"):
        folder_data(root)


def test_linked_subfolders_are_followed_inside_the_root_and_refused_outside(tmp_path):
    root = make_image_folder(tmp_path / "images", train=4, test=2)
    extra = root / "more_red"
    shutil.copytree(root / "train" / "red", extra)  # inside the root, outside train/
    os.symlink(extra, root / "train" / "red" / "linked")
    os.symlink(root / "train" / "red", root / "train" / "red" / "loop")  # a loop: once
    assert images_in(folder_data(root).train) + images_in(folder_data(root).val) == 12 + 4
    outside = tmp_path / "elsewhere"
    shutil.copytree(root / "train" / "blue", outside)
    os.symlink(outside, root / "train" / "blue" / "outside")
    with pytest.raises(UserError, match="leads to .*elsewhere.*outside dataset.root"):
        folder_data(root)


def test_a_link_to_nothing_is_named_or_skipped_and_counted(tmp_path, caplog):
    root = make_image_folder(tmp_path / "images", train=4, test=2)
    os.symlink(tmp_path / "gone.png", root / "train" / "green" / "dead.png")
    with pytest.raises(UserError, match="dead.png is a link to .*gone.png, which does not exist"):
        folder_data(root)
    data = folder_data(root, on_bad_image="skip")
    assert images_in(data.train) + images_in(data.val) == 12
    assert "dead.png" in caplog.text


def test_hidden_files_are_left_out_and_counted(tmp_path, caplog):
    root = make_image_folder(tmp_path / "images", train=4, test=2)
    (root / "train" / "red" / "._train_000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "train" / "red" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    with caplog.at_level(logging.INFO):
        data = folder_data(root)  # on_bad_image=stop: a hidden file would have stopped it
    assert images_in(data.train) + images_in(data.val) == 12
    assert "left out 2 hidden file(s)" in caplog.text


@pytest.mark.parametrize("fit", ["squash", "pad", "center_crop"])
def test_a_wide_photo_is_squashed_padded_or_cropped(tmp_path, fit):
    """A 40×20 photo, left half black and right half white, made 16×16."""
    pixels = torch.zeros(20, 40, dtype=torch.uint8)
    pixels[:, 20:] = 255
    Image.fromarray(pixels.numpy(), mode="L").save(tmp_path / "wide.png")
    image = decode_image(tmp_path / "wide.png", "L", 16, fit=fit)[0].float() / 255
    if fit == "squash":  # the whole width, stretched: half black, half white
        assert image[:, :7].max() < 0.1 and image[:, 9:].min() > 0.9
    elif fit == "pad":  # the whole photo, 16×8, black bands above and below
        assert image[:3].max() == 0 and image[-3:].max() == 0 and image[8, 12] > 0.9
    else:  # the middle 20×20 of it: the border between black and white at the centre
        assert image[:, :6].max() < 0.1 and image[:, 10:].min() > 0.9 and image[0, 12] > 0.9


def test_the_image_folder_preset_keeps_a_photos_aspect_and_an_old_run_squashes(tmp_path):
    from helpers import compose_config

    assert compose_config(["dataset=image_folder"]).dataset.resize == "center_crop"
    root = make_image_folder(tmp_path / "images", train=3, test=1)
    assert folder_data(root).preprocessing["resize"] == "squash"  # a config from before: as then


def test_class_names_in_other_scripts_are_drawn_as_letters_not_boxes():
    from PIL import ImageDraw

    from dlcourse.pictures.drawing import font

    def drawn(text: str) -> bytes:
        canvas = Image.new("L", (40, 24), 0)
        ImageDraw.Draw(canvas).text((2, 2), text, fill=255, font=font())
        return canvas.tobytes()

    missing = drawn("\U000e0fff")  # no font has it: what a missing letter looks like
    for letter in ("é", "Ö", "ж", "λ", "ł"):
        assert drawn(letter) != missing, letter
