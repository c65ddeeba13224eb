"""The lecture's demonstrations (issue #15): differentiation three ways, decision boundaries on
2-D toy data, learned templates, template matching in scenes and retrieval."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import call, compose_config
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from dlcourse.course import differentiation, matching
from dlcourse.data.idx_files import read_split
from dlcourse.data.toy import points
from dlcourse.models import MLP
from dlcourse.pictures.charts import PALETTE, decision_boundary
from dlcourse.run import train


def test_symbolic_automatic_and_hand_derivatives_agree():
    formula, exact = differentiation.symbolic_derivative("w1")
    # By hand: s = w0 + w1·x1 + w2·x2 = −3 − 2 + 6 = 1, ∂f/∂w1 = f(1 − f)·x1 with f = σ(1).
    f = 1 / (1 + math.exp(-1.0))
    assert exact == pytest.approx(f * (1 - f) * -1.0, rel=1e-15)
    assert differentiation.autograd_derivative("w1") == pytest.approx(exact, rel=1e-15)
    assert "exp" in str(formula)  # a formula, not a number


def test_finite_difference_errors_make_the_lectures_v_curve():
    curves = differentiation.error_curves("w1")
    steps, forward, central = curves["step"], curves["forward"], curves["central"]

    def at(h: float, errors: list[float]) -> float:
        return errors[min(range(len(steps)), key=lambda i: abs(math.log10(steps[i] / h)))]

    # Truncation: forward differences lose one digit per decade of h, central ones two.
    assert at(1e-2, forward) / at(1e-3, forward) == pytest.approx(10, rel=0.05)
    assert at(1e-2, central) / at(1e-3, central) == pytest.approx(100, rel=0.05)
    # The bottoms of the V: near √ε for forward, near ∛ε for central differences.
    best_forward = steps[forward.index(min(forward))]
    best_central = steps[central.index(min(central))]
    assert 1e-9 <= best_forward <= 1e-6 and 1e-7 <= best_central <= 1e-4
    assert min(central) < min(forward) / 10
    # Rounding: the smallest steps are far worse than the best ones.
    assert forward[-1] > 1e4 * min(forward) and central[-1] > 1e4 * min(central)


def test_differentiation_demo_writes_the_picture(tmp_path, capsys):
    differentiation.main(["--out", str(tmp_path / "v.png")])
    assert "symbolic" in capsys.readouterr().out
    with Image.open(tmp_path / "v.png") as picture:
        assert picture.size[0] >= 400 and picture.size[1] >= 300


def test_toy_points_are_seeded_and_the_test_points_fixed():
    first, again, other = points(seed=0), points(seed=0), points(seed=1)
    assert first.input_shape == (2,) and first.task.class_names == ["arm 0", "arm 1", "arm 2"]
    assert torch.equal(first.train.tensors[0], again.train.tensors[0])
    assert not torch.equal(first.train.tensors[0], other.train.tensors[0])
    assert torch.equal(first.test.tensors[0], other.test.tensors[0])  # whatever the seed
    xy, labels = points("xor", num_classes=2, noise=0.0).test.tensors
    assert torch.equal(labels, ((xy[:, 0] > 0) != (xy[:, 1] > 0)).long())
    assert 0.4 < labels.float().mean() < 0.6


def test_an_mlp_without_nonlinearity_is_a_linear_map():
    torch.manual_seed(0)
    x, y = torch.randn(5, 2), torch.randn(5, 2)
    linear_mlp = MLP(input_size=2, hidden_sizes=[16, 16], num_classes=3, activation="identity")
    relu_mlp = MLP(input_size=2, hidden_sizes=[16, 16], num_classes=3, activation="relu")
    with torch.no_grad():
        for mlp, is_linear in ((linear_mlp, True), (relu_mlp, False)):
            zero = mlp(torch.zeros(1, 2))
            # Affine: f(2x − 3y) − f(0) = 2 (f(x) − f(0)) − 3 (f(y) − f(0)).
            left = mlp(2 * x - 3 * y) - zero
            right = 2 * (mlp(x) - zero) - 3 * (mlp(y) - zero)
            assert torch.allclose(left, right, atol=1e-5) == is_linear


def test_decision_boundary_colours_each_side_by_the_predicted_class():
    model = nn.Linear(2, 2)
    with torch.no_grad():  # class 1 wherever x > 0: the boundary is the vertical line x = 0
        model.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        model.bias.zero_()
    points = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    image = decision_boundary(model, points, torch.tensor([0, 1]), size=100)
    assert image.shape == (3, 100, 100) and image.min() >= 0 and image.max() <= 1
    region = 0.35 * PALETTE + 0.65
    assert torch.allclose(image[:, 50, 10], region[0]) and torch.allclose(
        image[:, 50, 90], region[1]
    )
    # The points sit in their corners (y grows upwards), in their own class's colour.
    assert torch.allclose(image[:, 90, 9], 0.8 * PALETTE[0], atol=1e-6)
    assert torch.allclose(image[:, 9, 90], 0.8 * PALETTE[1], atol=1e-6)


def test_spirals_need_an_mlp(tmp_path):
    """The lecture's point as a run: straight cuts (linear, or an MLP without non-linearity)
    leave most of the spirals' arms on the wrong side; the ReLU MLP separates them."""
    accuracy = {}
    for name, overrides in (
        ("linear", ["model=linear"]),
        ("identity", ["model.activation=identity", "model.hidden_sizes=[64,64]"]),
        ("relu", ["model.hidden_sizes=[64,64]"]),
    ):
        quick = ["trainer.device=cpu", "trainer.epochs=15", "optimizer.lr=0.02"]
        cfg = compose_config(["experiment=spirals", *quick, *overrides])
        accuracy[name] = train(cfg, tmp_path / name)["test/acc"]
        assert (tmp_path / name / "decision_boundary.png").is_file()
    assert accuracy["relu"] >= 0.95, accuracy
    assert accuracy["linear"] <= 0.7 and accuracy["identity"] <= 0.7, accuracy


def test_ncc_map_matches_the_formula_window_by_window():
    scene, template = torch.rand(12, 15), torch.rand(4, 5)
    scene[:5, :6] = 0.3  # a flat window: no contrast, so no correlation
    scores = matching.ncc_map(scene, template)
    assert scores.shape == (9, 11)
    t = template - template.mean()
    for row in range(9):
        for column in range(11):
            window = scene[row : row + 4, column : column + 5]
            w = window - window.mean()
            expected = 0.0 if w.norm() < 1e-6 else (w * t).sum() / (w.norm() * t.norm())
            assert scores[row, column].item() == pytest.approx(float(expected), abs=1e-5)
    assert scores[0, 0] == 0.0


def test_template_matching_finds_the_cut_out_digit_and_loses_rotated_ones(tiny_mnist):
    test = read_split(tiny_mnist, train=False)
    images = test.data.float() / 255
    results = {r["case"]: r for r in matching.match_all(images[0], images[1:9])}
    plain = results["as cut out"]
    assert plain["found"] and plain["peak"] == pytest.approx(1.0, abs=1e-5)
    assert plain["best"] == (56, 56)  # the centre cell's window
    for case in ("occluded", "scaled x1.5", "rotated 90 deg"):
        assert results[case]["at_target"] < 0.9  # each failure case costs the match its score


def test_matching_demo_on_real_mnist_shows_where_pixels_fail(shared_mnist, tmp_path, capsys):
    matching.main(["--data-dir", str(shared_mnist), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()}
    assert "found" in lines["as cut out"] and "missed" in lines["rotated 90 deg"]
    for query in ("test digit 7", "test digit 2", "test digit 1"):
        assert int(lines[query].split(": ")[1].split()[0]) >= 6  # of 8 neighbours share its label
    for query in ("7 shifted 6 px", "7 inverted"):
        assert int(lines[query].split(": ")[1].split()[0]) <= 2
    for name in ("template_matching.png", "retrieval.png"):
        with Image.open(tmp_path / name) as picture:
            assert picture.size[0] > 500


def roughness(templates: torch.Tensor) -> float:
    """Median over (N, H, W) templates of the mean squared step between neighbouring weights,
    relative to the template's variance: 2 for white noise (random starting weights), small for
    smooth strokes."""
    centred = templates - templates.mean(dim=(1, 2), keepdim=True)
    across = (centred[:, :, 1:] - centred[:, :, :-1]).square().mean(dim=(1, 2))
    down = (centred[:, 1:, :] - centred[:, :-1, :]).square().mean(dim=(1, 2))
    return ((across + down) / (2 * centred.square().mean(dim=(1, 2)))).median().item()


def test_roughness_tells_noise_from_strokes():
    assert roughness(torch.randn(50, 28, 28)) == pytest.approx(2.0, abs=0.1)
    stroke = torch.zeros(1, 28, 28)
    stroke[0, 10:18, 4:24] = torch.linspace(0, 1, 20)  # a bar that fades in
    assert roughness(stroke) < 0.3


@pytest.mark.parametrize(
    ("preset", "plain", "shortened"),
    [
        ("linear_mnist", ["model.zero_init=false", "optimizer.weight_decay=0"], []),
        ("mlp100_mnist", ["optimizer.weight_decay=0"], []),
        pytest.param(  # minutes of CNN training on 2 cores: run with pytest -m benchmark
            "filters_cnn_mnist",
            ["experiment=cnn_mnist"],
            ["trainer.epochs=2"],
            marks=pytest.mark.benchmark,
        ),  # fmt: skip
    ],
)
def test_picture_presets_learn_smooth_templates_and_filters(
    shared_mnist, tmp_path, preset, plain, shortened
):
    """The lecture's pictures: the presets' first-layer weights are smooth strokes and edges,
    where plain training (random start, no weight decay; cnn_mnist's 5×5 filters) leaves the
    random starting speckle."""
    values = {}
    for name, extra in (("preset", []), ("plain", plain)):
        settings = ["trainer.device=cpu", f"paths.data_dir={shared_mnist}"]
        overrides = [f"experiment={preset}", "trainer.epochs=3", *shortened, *settings, *extra]
        train(compose_config(overrides), tmp_path / name)
        weights = load_file(tmp_path / name / "model.safetensors")
        # The layer that sees the image: 784-pixel templates, or k×k filters on one channel.
        first = next(w for w in weights.values() if w.shape[1:2] in ((784,), (1,)))
        side = round(first[0].numel() ** 0.5)
        values[name] = roughness(first.reshape(-1, side, side))
    # Measured (3 epochs; the CNNs 2): linear 0.41 vs 0.64, MLP 0.47 vs 0.96, CNN 0.71 vs 1.65.
    assert values["preset"] < 0.8 and values["plain"] > 1.3 * values["preset"], values


def test_a_points_model_evaluates_and_predict_says_it_takes_no_images(
    tmp_path, monkeypatch, capsys
):
    quick = ["trainer.device=cpu", "trainer.epochs=1", "dataset=xor"]
    metrics = train(compose_config(["experiment=spirals", *quick]), tmp_path / "run")
    assert (tmp_path / "run" / "decision_boundary.png").is_file()
    results = tmp_path / "results.json"
    status, output = call(
        "dlcourse-eval", [f"ckpt_path={tmp_path / 'run'}", f"output_path={results}"],
        monkeypatch, capsys,
    )  # fmt: skip
    assert status == 0, output
    assert json.loads(results.read_text())["test/acc"] == metrics["test/acc"]
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    argv = [str(tmp_path / "run"), str(tmp_path / "digit.png")]
    status, output = call("dlcourse-predict", argv, monkeypatch, capsys)
    assert status == 2 and "classifies 2-D points" in output and "Traceback" not in output


def test_each_mlp_activation_is_drawn_with_the_derivative_its_formula_gives(tmp_path, capsys):
    from dlcourse.course import activations
    from dlcourse.models.mlp import ACTIVATIONS

    assert activations.DERIVATIVES.keys() == ACTIVATIONS.keys()  # every model option, no other
    drawn = activations.curves()
    for name, curve in drawn.items():
        assert curve["gap"] < 1e-12, name  # autograd's derivative is the formula's
    # What the lecture points out: sigmoid's slope is at most 1/4, and vanishes away from 0.
    sigmoid = drawn["sigmoid"]["derivative"]
    assert sigmoid.max().item() == pytest.approx(0.25) and sigmoid[0].item() < 0.02
    assert set(drawn["relu"]["derivative"].tolist()) == {0.0, 1.0}
    out = tmp_path / "activations.png"
    activations.main(["--out", str(out)])
    assert Image.open(out).size[0] > 600
    assert "leaky_relu" in capsys.readouterr().out


def test_a_fully_connected_layer_is_a_convolution_with_a_filter_the_size_of_its_input(capsys):
    from dlcourse.course.fc_as_conv import as_convolution, main

    linear = nn.Linear(3 * 8 * 8, 5)
    conv = as_convolution(linear, channels=3, size=8)
    images = torch.randn(6, 3, 8, 8)
    torch.testing.assert_close(conv(images).flatten(1), linear(images.flatten(1)))
    assert sum(p.numel() for p in conv.parameters()) == 3 * 8 * 8 * 5 + 5
    main([])
    out = capsys.readouterr().out
    assert "Linear(784, 10)" in out and "7,850" in out and "Conv2d(1, 10, kernel_size=28)" in out
    small = next(line for line in out.splitlines() if "kernel_size=3" in line)
    assert small.split()[-4] == "100"  # the 3 × 3 convolution's 10 · 9 + 10 parameters
