"""Inpainting: masks, pairs, losses and metrics against hand-computed values, and full runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import (
    NUM_TINY_TEST,
    compose_config,
    only_run_folder,
    quick_overrides,
    read_events,
    run_command,
    tiny_digits,
)

from dlcourse.data.inpainting import inpainting
from dlcourse.data.masks import center_box, half, make_masks, pixels, rectangles
from dlcourse.infrastructure.errors import UserError
from dlcourse.losses import PixelLoss
from dlcourse.tasks import InpaintingTask, psnr


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- masks -------------------------------------------------------------------------------------


def test_rectangles_are_whole_rectangles_inside_the_image():
    masks = rectangles(500, 28, 28, generator(), number=1, min_size=5, max_size=10)
    assert masks.shape == (500, 1, 28, 28) and set(masks.unique().tolist()) == {0.0, 1.0}
    for mask in masks[:, 0]:
        rows, columns = torch.nonzero(mask, as_tuple=True)
        height, width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
        assert 5 <= height <= 10 and 5 <= width <= 10  # never cut short by the image border
        assert mask.sum() == height * width  # a full rectangle
    # Rectangles reach every border, so positions cover the whole image.
    assert masks[:, 0, 0].sum() > 0 and masks[:, 0, -1].sum() > 0 and masks[:, 0, :, -1].sum() > 0


def test_several_rectangles_cover_between_one_and_all_of_them():
    masks = rectangles(200, 28, 28, generator(), number=3, min_size=4, max_size=6)
    areas = masks.sum(dim=(1, 2, 3))
    assert (areas >= 16).all() and (areas <= 3 * 36).all()


def test_pixel_dropout_hits_its_rate():
    masks = pixels(200, 28, 28, generator(), rate=0.3)
    assert masks.mean().item() == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize(
    ("side", "rows", "columns"),
    [
        ("top", slice(0, 14), slice(None)),
        ("bottom", slice(14, 28), slice(None)),
        ("left", slice(None), slice(0, 14)),
        ("right", slice(None), slice(14, 28)),
    ],
)
def test_half_masks_cover_exactly_their_half(side, rows, columns):
    masks = half(3, 28, 28, generator(), side=side)
    expected = torch.zeros(28, 28)
    expected[rows, columns] = 1
    assert all(torch.equal(mask[0], expected) for mask in masks)


def test_random_halves_use_every_side():
    masks = half(100, 28, 28, generator(), side="random")
    assert (masks.sum(dim=(1, 2, 3)) == 28 * 14).all()
    assert len({tuple(mask.flatten().tolist()) for mask in masks}) == 4


def test_center_box_is_centred():
    mask = center_box(2, 28, 28, generator(), size=10)[0, 0]
    assert mask.sum() == 100 and mask[9:19, 9:19].all()


def test_unknown_mask_kind_and_bad_sizes_are_clear_errors():
    with pytest.raises(UserError, match="mask kind 'blob' is not known; choose mask=rectangles"):
        make_masks({"kind": "blob"}, 1, 28, 28, 0, torch.device("cpu"))
    with pytest.raises(UserError, match="max_size <= 28"):
        make_masks({"kind": "rectangles", "max_size": 40}, 1, 28, 28, 0, torch.device("cpu"))
    with pytest.raises(UserError, match="bad settings for a pixels mask"):
        make_masks({"kind": "pixels", "size": 3}, 1, 28, 28, 0, torch.device("cpu"))


# --- pairs -------------------------------------------------------------------------------------


def build(tiny_mnist, seed=0, **settings):
    return inpainting(
        str(tiny_mnist), val_size=50, batch_size=32, eval_batch_size=64, seed=seed, **settings
    )


def test_validation_and_test_masks_are_fixed_by_the_seed(tiny_mnist):
    first, second, other = (
        build(tiny_mnist, seed=1),
        build(tiny_mnist, seed=1),
        build(tiny_mnist, seed=2),
    )
    assert torch.equal(first.val.tensors[1], second.val.tensors[1])
    assert torch.equal(first.test.tensors[1], second.test.tensors[1])
    assert not torch.equal(first.test.tensors[1], other.test.tensors[1])


def test_training_masks_change_every_epoch_reproducibly(tiny_mnist):
    data, again = build(tiny_mnist), build(tiny_mnist)
    masks = {}
    for epoch in (1, 2):
        data.train.set_epoch(epoch)
        masks[epoch] = data.train.tensors[1].clone()
    again.train.set_epoch(2)
    assert not torch.equal(masks[1], masks[2])
    assert torch.equal(again.train.tensors[1], masks[2])


def test_pairs_keep_the_target_and_fill_only_the_hole(tiny_mnist):
    data = build(tiny_mnist, fill_value=0.25, mask={"kind": "center_box", "size": 10})
    masked, target, mask = next(iter(data.test))
    expected, _ = tiny_digits(NUM_TINY_TEST, seed=1)
    torch.testing.assert_close(target[:, 0], expected[: len(target)].float() / 255)
    kept = mask == 0
    assert torch.equal(masked[kept], target[kept])
    assert (masked[~kept] == 0.25).all()


# --- losses and metrics ------------------------------------------------------------------------


def test_pixel_losses_against_hand_computed_values():
    outputs = torch.tensor([[[[0.5, 1.0], [0.0, 0.2]]]])  # (1, 1, 2, 2)
    targets = torch.tensor([[[[1.0, 1.0], [0.5, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # errors: -0.5, 0, -0.5, 0.2 → ½Σe² = ½(0.25 + 0.25 + 0.04) = 0.27; Σ|e| = 1.2
    assert PixelLoss("mse")(outputs, targets, mask).item() == pytest.approx(0.27)
    assert PixelLoss("l1")(outputs, targets, mask).item() == pytest.approx(1.2)
    assert PixelLoss("mse", kept_weight=0.0)(outputs, targets, mask).item() == pytest.approx(
        0.25
    )  # hole only
    assert PixelLoss("l1", hole_weight=3.0)(outputs, targets, mask).item() == pytest.approx(
        3.0 + 0.2
    )
    assert PixelLoss("mse", reduction="pixel_mean")(outputs, targets, mask).item() == pytest.approx(
        0.27 / 4
    )


def test_pixel_mse_matches_torch_and_averages_over_the_batch():
    outputs, targets = torch.rand(4, 1, 5, 5), torch.rand(4, 1, 5, 5)
    mask = torch.ones(4, 1, 5, 5)
    reference = 0.5 * torch.nn.functional.mse_loss(outputs, targets, reduction="sum") / 4
    torch.testing.assert_close(PixelLoss("mse")(outputs, targets, mask), reference)


def test_whole_image_metrics_are_those_of_the_filled_image():
    """Known pixels are kept in what a user gets, so a model's errors there do not count; the
    masked input itself (the unfilled baseline) keeps its error in the hole."""
    targets = torch.tensor([[[[1.0, 1.0], [0.5, 0.5]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    wrong_outside = torch.tensor([[[[0.8, 0.0], [0.0, 0.0]]]])  # hole 0.2 off, the rest far off
    sums = InpaintingTask(mean_image=torch.zeros(1, 2, 2)).batch_sums(wrong_outside, targets, mask)
    assert sums["mse"].item() == pytest.approx(0.04 / 4) and sums[
        "mse_hole"
    ].item() == pytest.approx(0.04)
    unfilled = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])
    assert InpaintingTask(torch.zeros(1, 2, 2)).batch_sums(unfilled, targets, mask)[
        "mse"
    ].item() == pytest.approx(0.25)


def test_inpainting_metrics_against_hand_computed_values():
    targets = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    outputs = torch.tensor([[[[0.9, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.5]]]])
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 1.0]]]])
    sums = InpaintingTask(mean_image=torch.zeros(1, 2, 2)).batch_sums(outputs, targets, mask)
    # image 1: squared errors 0.01, 0, 0, 0 → mse 0.0025, hole mse 0.005; image 2: 0.25 → mse
    # 0.0625, hole 0.25
    assert sums["mse"].item() == pytest.approx(0.0025 + 0.0625)
    assert sums["mse_hole"].item() == pytest.approx(0.005 + 0.25)
    assert sums["psnr"].item() == pytest.approx(
        10 * math.log10(1 / 0.0025) + 10 * math.log10(1 / 0.0625), rel=1e-5
    )
    assert sums["psnr_hole"].item() == pytest.approx(
        10 * math.log10(1 / 0.005) + 10 * math.log10(1 / 0.25), rel=1e-5
    )
    assert psnr(torch.tensor(0.01)).item() == pytest.approx(20.0)


def test_baselines_leave_the_hole_or_fill_it_with_the_mean_image():
    mean_image = torch.full((1, 2, 2), 0.3)
    masked = torch.tensor([[[[0.0, 1.0], [0.5, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    baselines = InpaintingTask(mean_image).baselines(masked, masked, mask)
    assert torch.equal(baselines["unfilled"], masked)
    assert torch.equal(baselines["meanfill"], torch.tensor([[[[0.3, 1.0], [0.5, 0.3]]]]))


# --- whole runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["mlp_inpainting", "conv_inpainting"])
def test_inpainting_run_writes_grid_png_and_baseline_metrics(preset, tiny_mnist, tmp_path):
    overrides = [f"experiment={preset}", *quick_overrides(tiny_mnist)]
    result = run_command(["dlcourse-train", *overrides], tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_folder(tmp_path / "outputs" / "runs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "test/mse_hole",
        "test/psnr_hole",
        "test/mse",
        "test/psnr",
        "val/mse_hole",
        "baselines/test/unfilled/mse_hole",
        "baselines/test/meanfill/mse_hole",
        "baselines/test/meanfill/psnr",
        "baselines/val/meanfill/mse_hole",
    ):
        assert math.isfinite(metrics[key]), key
    # Filling with the mean image beats leaving the hole black on digits.
    assert metrics["baselines/test/meanfill/mse_hole"] < metrics["baselines/test/unfilled/mse_hole"]

    from PIL import Image

    # Its log lines fit a wide terminal: the loss and the monitored metric, not all twenty.
    lines = (run_dir / "train.log").read_text().splitlines()
    long = [line for line in lines if len(line) > 160 and run_dir.name not in line]  # a path: any
    assert not long and any("val loss=" in line and "mse_hole=" in line for line in lines), long
    with Image.open(run_dir / "inpainting.png") as grid:
        width, height = grid.size  # 4 columns, 8 samples, each 28 px drawn 3×, and headers
        assert width >= 4 * 84 and height >= 8 * 84
    events = read_events(run_dir)
    assert len(events.Images("pictures/inpainting")) == 2 + 1  # each of 2 evaluations, and the test
    checkpoint = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert checkpoint["task"] == "inpainting" and checkpoint["input_shape"] == [1, 28, 28]


def test_classification_model_on_inpainting_data_is_refused(tiny_mnist, tmp_path):
    from dlcourse.run import train

    with pytest.raises(UserError, match="Pick a model and loss made for this dataset"):
        train(
            compose_config(["dataset=inpainting", "model=linear", *quick_overrides(tiny_mnist)]),
            tmp_path,
        )


def test_the_inpainting_picture_outlines_each_hole_and_fills_it_visibly():
    """Black-filled holes are invisible on MNIST's black background: the masked input's hole is
    filled dark blue, and a red line runs just outside the hole in the first three columns."""
    from dlcourse.pictures.drawing import BODY_TOP, LINE
    from dlcourse.pictures.samples import HOLE_EDGE, HOLE_FILL, inpainting_image

    targets = torch.zeros(1, 1, 28, 28)
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., 10:14, 5:9] = 1
    image = inpainting_image(targets * (1 - mask), targets, targets, mask)
    top, left = BODY_TOP + LINE + 4 + 4, 4  # below the title, the headers; the first cell
    tile = image[:, top : top + 84, left : left + 84]  # the masked input, 3×
    torch.testing.assert_close(tile[:, 31, 16], HOLE_FILL, atol=1 / 255, rtol=0)  # in the hole
    torch.testing.assert_close(tile[:, 29, 16], HOLE_EDGE, atol=1 / 255, rtol=0)  # just above
    assert torch.all(tile[:, 0, 0] == 0)  # far from it: the image itself
