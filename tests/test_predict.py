"""dlcourse-predict on classification and inpainting checkpoints, and on bad input."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import compose_config, quick_overrides, tiny_digits
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from dlcourse.predict import main, read_digit
from dlcourse.run import train


@pytest.fixture(scope="module")
def classifier(tiny_mnist, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("classifier")
    train(
        compose_config(["model=mlp", "model.hidden_sizes=[32]", *quick_overrides(tiny_mnist)]),
        run_dir,
    )
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def inpainter(tiny_mnist, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("inpainter")
    overrides = ["experiment=conv_inpainting", "model.widths=[8,16]", *quick_overrides(tiny_mnist)]
    train(compose_config(overrides), run_dir)
    return run_dir / "checkpoints" / "best.pt"


def save_digit(path, label: int, invert: bool = False, size: int = 56):
    images, _ = tiny_digits(10, seed=3)
    image = Image.fromarray(images[label].byte().numpy(), mode="L").resize((size, size))
    if invert:  # dark ink on white paper, as a photo of a drawing would be
        image = Image.eval(image, lambda value: 255 - value)
    image.save(path)
    return path


def test_read_digit_makes_an_mnist_like_input(tmp_path):
    dark_on_light = read_digit(save_digit(tmp_path / "a.png", 3, invert=True))
    light_on_dark = read_digit(save_digit(tmp_path / "b.png", 3))
    assert dark_on_light.shape == (1, 28, 28)
    torch.testing.assert_close(dark_on_light, light_on_dark, atol=0.2, rtol=0)
    border = torch.cat([dark_on_light[0, :4].flatten(), dark_on_light[0, -4:].flatten()])
    assert torch.allclose(border, torch.tensor(-0.1307 / 0.3081))  # the margin is background


def test_classifier_prints_top_k_and_json(classifier, tmp_path, capsys):
    images = [
        save_digit(tmp_path / f"{label}.png", label, invert=label % 2 == 1) for label in (2, 5, 7)
    ]
    main([str(classifier), *map(str, images), "--top-k", "2", "--json"])
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == list(map(str, images))
    for result in results:
        assert (
            len(result["top"]) == 2
            and result["top"][0]["probability"] >= result["top"][1]["probability"]
        )
        assert 0 < sum(t["probability"] for t in result["top"]) <= 1.0001
    main([str(classifier), str(images[0])])
    assert capsys.readouterr().out.startswith(f"{images[0]}: ")


def test_inpainter_fills_a_box_and_keeps_the_other_pixels(inpainter, tmp_path, capsys):
    image = save_digit(tmp_path / "digit.png", 4, size=28)
    main(
        [str(inpainter), str(image), "--box", "8,8,10,10", "--output", str(tmp_path / "filled.png")]
    )
    assert f"Wrote {tmp_path / 'filled.png'}" in capsys.readouterr().out
    original = pil_to_tensor(Image.open(image))[0]
    filled = pil_to_tensor(Image.open(tmp_path / "filled.png").convert("L"))[0]
    outside = torch.ones(28, 28, dtype=torch.bool)
    outside[8:18, 8:18] = False
    assert torch.equal(filled[outside], original[outside])


def test_inpainter_takes_a_mask_image(inpainter, tmp_path):
    image = save_digit(tmp_path / "digit.png", 4, size=28)
    mask = Image.new("L", (28, 28))
    mask.paste(255, (0, 0, 14, 28))
    mask.save(tmp_path / "mask.png")
    main([str(inpainter), str(image), "--mask", str(tmp_path / "mask.png")])
    assert (tmp_path / "digit_filled.png").is_file()


@pytest.mark.parametrize(
    ("which", "extra", "message"),
    [
        (
            "classifier",
            ["--box", "1,1,3,3"],
            "is a classification checkpoint: --mask and --box are for inpainting",
        ),
        ("inpainter", [], "needs --mask MASK.png or --box"),
        ("classifier", ["unreadable"], "cannot read image"),
    ],
)
def test_wrong_use_is_one_clear_error(which, extra, message, request, tmp_path, capsys):
    checkpoint = request.getfixturevalue(which)
    image = save_digit(tmp_path / "digit.png", 1, size=28)
    if extra == ["unreadable"]:
        image.write_bytes(b"not an image")
        extra = []
    with pytest.raises(SystemExit) as exit_info:
        main([str(checkpoint), str(image), *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
