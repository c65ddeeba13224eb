"""The inpainting folder dataset: a good folder, and each bad one refused before training."""

from __future__ import annotations

import pytest
import torch
from helpers import make_folder
from PIL import Image

from dlcourse.data.inpainting_folder import inpainting_folder
from dlcourse.infrastructure.errors import UserError


@pytest.mark.parametrize("with_masks", [True, False])
def test_good_folder_gives_masked_complete_mask_batches(tmp_path, with_masks):
    data = inpainting_folder(
        str(make_folder(tmp_path, with_masks=with_masks)), batch_size=4, seed=0
    )
    masked, complete, mask = next(iter(data.test))
    assert masked.shape == complete.shape == (1, 1, 28, 28) and mask.shape == (1, 1, 28, 28)
    assert 40 <= mask.sum() <= 49  # the 7×7 box (less where a kept pixel happens to be black)
    kept = mask == 0
    torch.testing.assert_close(masked[kept], complete[kept])
    data.train.set_epoch(1)
    assert sum(len(batch[0]) for batch in data.train) == 10  # 12 pairs: 1 test, 1 val, 10 train
    assert data.task.mean_image.shape == (1, 28, 28)


def test_rgb_images_are_resized(tmp_path):
    data = inpainting_folder(
        str(make_folder(tmp_path, size=(40, 40), mode="RGB")), image_size=16, channels=3
    )
    masked, complete, mask = next(iter(data.val))
    assert masked.shape == (1, 3, 16, 16) and mask.shape == (1, 1, 16, 16)


def test_unmatched_names_are_listed(tmp_path):
    root = make_folder(tmp_path)
    (root / "complete" / "img03.png").rename(root / "complete" / "other.png")
    with pytest.raises(UserError, match="do not match between masked/ and complete/: img03, other"):
        inpainting_folder(str(root))


def test_unreadable_file_is_named(tmp_path):
    root = make_folder(tmp_path)
    (root / "masked" / "img04.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read image .*masked/img04.png"):
        inpainting_folder(str(root))


def test_pair_of_different_sizes_is_refused(tmp_path):
    root = make_folder(tmp_path)
    Image.new("L", (30, 20)).save(root / "complete" / "img05.png")
    with pytest.raises(UserError, match="the images of one pair differ in size"):
        inpainting_folder(str(root))


def test_mixed_sizes_without_resizing_are_refused(tmp_path):
    root = make_folder(tmp_path)
    for name in ("masked", "complete", "mask"):
        Image.new("L", (30, 30)).save(root / name / "img06.png")
    with pytest.raises(UserError, match="set dataset.image_size to resize them"):
        inpainting_folder(str(root), image_size=None)
    assert inpainting_folder(str(root), image_size=28).test  # resizing makes them fit


def test_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        inpainting_folder(str(tmp_path / "nowhere"))
    (tmp_path / "masked").mkdir()
    with pytest.raises(UserError, match="masked is missing or empty"):
        inpainting_folder(str(tmp_path))


def test_training_on_a_folder(tiny_pairs, tmp_path):
    from helpers import compose_config, quick_overrides

    from dlcourse.run import train

    overrides = [
        "dataset=inpainting_folder",
        f"dataset.data_dir={tiny_pairs}",
        "model=conv_inpaint",
        "model.widths=[8,16]",
        "loss=pixel_mse",
        "optimizer=adam",
    ]
    metrics = train(
        compose_config([*quick_overrides(tiny_pairs, mnist_sizes=False), *overrides]), tmp_path
    )
    assert metrics["test/mse_hole"] >= 0 and "baselines/test/meanfill/mse_hole" in metrics
    assert (tmp_path / "inpainting.png").is_file()
