"""Course tools: backprop by hand, gradient checking and model summaries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_config
from torch import nn

from dlcourse.commands.gradcheck import report
from dlcourse.commands.summary import summarize
from dlcourse.course.autograd import Linear, Multiply, ReLU, relu_network, sigmoid_neuron
from dlcourse.course.gradient_check import example_batch, gradient_check, judge
from dlcourse.infrastructure.config import build, config_dir, fill_model_sizes
from dlcourse.infrastructure.errors import UserError

BIN = Path(sys.executable).parent


def test_functions_pass_torch_gradcheck():
    generator = torch.Generator().manual_seed(0)

    def double(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)

    assert torch.autograd.gradcheck(Multiply.apply, (double(3, 4), double(3, 4)))
    # Away from 0, where ReLU has no derivative.
    x = double(5, 3)
    with torch.no_grad():
        x += x.sign() * 0.1
    assert torch.autograd.gradcheck(ReLU.apply, (x,))
    assert torch.autograd.gradcheck(Linear.apply, (double(6, 4), double(3, 4), double(3)))


def test_linear_function_matches_torch():
    x, weight, bias = torch.randn(5, 4), torch.randn(3, 4), torch.randn(3)
    torch.testing.assert_close(Linear.apply(x, weight, bias), nn.functional.linear(x, weight, bias))


def test_relu_network_gives_the_lectures_numbers():
    values = relu_network(x=5, w1=1, w2=2, y=2)  # ŷ − y = 10 − 2 = 8
    assert values["y_hat"] - 2 == 8
    assert values["dL/dy_hat"] == 8 and values["dL/dg"] == 16 and values["dL/df"] == 16
    assert values["dL/dw1"] == 80
    assert values["dL/dw2"] == 8 * values["g"] == 40
    assert values["autograd dL/dw1"] == pytest.approx(80) and values[
        "autograd dL/dw2"
    ] == pytest.approx(40)


def test_relu_network_with_a_shut_gate_passes_no_gradient():
    values = relu_network(x=5, w1=-1, w2=2, y=2)  # f = −5: ReLU gives 0
    assert values["dL/df"] == 0 and values["dL/dw1"] == 0 and values["autograd dL/dw1"] == 0


def test_sigmoid_neuron_stage_by_stage_matches_autograd():
    values = sigmoid_neuron(w0=-3, w1=2, x1=-1, w2=-3, x2=-2)
    assert values["f"] == pytest.approx(0.7311, abs=1e-4)
    f = values["f"]
    assert values["df/ds"] == pytest.approx(
        f * (1 - f)
    )  # the sigmoid's derivative, from its stages
    expected = {"w0": 0.1966, "w1": -0.1966, "x1": 0.3932, "w2": -0.3932, "x2": -0.5898}
    for name, gradient in expected.items():
        assert values[f"df/d{name}"] == pytest.approx(gradient, abs=1e-4)
        assert values[f"autograd df/d{name}"] == pytest.approx(values[f"df/d{name}"])


SMALL = {  # each model config, made small enough to check in seconds
    "linear": ["loss=cross_entropy"],
    "mlp": ["model.hidden_sizes=[16]", "loss=mse"],
    "cnn": ["model.channels=[4,8]", "model.hidden_sizes=[16]", "model.batch_norm=true"],
    "examples_cnn": ["model.channels=[4,8]", "model.hidden_sizes=[16]"],
    "mlp_inpaint": ["model.hidden_sizes=[16]", "loss=pixel_mse"],
    "conv_inpaint": ["model.widths=[4,8]", "loss=pixel_l1"],
}


def test_every_model_config_is_checked():
    configs = {path.stem for path in (Path(config_dir()) / "model").glob("*.yaml")}
    # AlexNet (61M parameters) takes minutes in float64; test_models checks its forward and
    # backward.
    # template_ncc and nearest_neighbor have no parameters (test_pictures_and_baselines.py).
    assert configs - {"alexnet", "template_ncc", "nearest_neighbor"} == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradients_of_every_model_match_central_differences(name):
    cfg = compose_config([f"model={name}", *SMALL[name]], config_name="gradcheck")
    torch.manual_seed(
        0
    )  # as dlcourse-gradcheck does: the same weights, so the same sampled entries, every run
    fill_model_sizes(cfg.model, (1, 28, 28), num_classes=10)  # as dlcourse-gradcheck does
    model, loss_fn = build(cfg, "model"), build(cfg, "loss")
    checks = gradient_check(
        model, loss_fn, example_batch(model, (1, 28, 28), batch_size=3), elements_per_parameter=3
    )
    assert [check.name for check in checks] == [name for name, _ in model.named_parameters()]
    assert all(check.passed for check in checks), checks
    # Passing must not lean on the kink rule or the float64 noise floor: away from kinks, each
    # parameter with a real gradient matches to 1e-5 relative (or to 1e-8 absolute where one sampled
    # entry is tiny). Biases right before batch norm have no gradient at all (it subtracts the
    # mean).
    judged = [check for check in checks if check.kinks == 0 and check.largest_gradient > 1e-6]
    assert all(check.relative_error < 1e-5 or check.absolute_error < 1e-8 for check in judged), (
        checks
    )


class WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, upstream):
        return 2 * upstream  # a bug: the identity's gradient is 1


class Buggy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, images):
        return WrongBackward.apply(self.fc(images.flatten(1)))


def test_a_wrong_backward_fails(capsys):
    model = Buggy()
    checks = gradient_check(
        model, nn.CrossEntropyLoss(), example_batch(model, (1, 28, 28)), elements_per_parameter=3
    )
    assert all(
        check.relative_error == pytest.approx(1 / 3, rel=1e-4) for check in checks
    )  # |2g − g| / (2g + g)
    assert not any(check.passed for check in checks)
    assert report(checks, tolerance=1e-5, atol=1e-8) is False
    assert "FAIL: fc.weight, fc.bias" in capsys.readouterr().out


def run(
    command: list[str], tmp_path: Path, pythonpath: Path | None = None
) -> subprocess.CompletedProcess:
    env = {"PATH": str(BIN), "PYTHONPATH": str(pythonpath or tmp_path), "HOME": str(tmp_path)}
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_gradcheck_cli_passes_fails_and_explains(tmp_path):
    (tmp_path / "user_models.py").write_text(
        "from torch import nn\nclass Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(784, "
        "10)\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
    )
    good = run(
        [
            "dlcourse-gradcheck",
            "~model",
            "+model._target_=user_models.Net",
            "elements_per_parameter=3",
        ],
        tmp_path,
    )
    assert good.returncode == 0, good.stderr
    assert "2 of 2 parameters PASS" in good.stdout
    # 3 entries of each of 2 parameters, 2 passes each; the whole model: 7,850 parameters.
    assert "Cost: 12 forward passes for these 6 entries; all 7,850 parameters would take " \
        "15,700." in good.stdout  # fmt: skip
    # While it works it says where it is (not a terminal here: a line per parameter).
    assert good.stderr.splitlines()[-2:] == [
        "checking 1/2: fc.weight, 3 entries (2 passes each)",
        "checking 2/2: fc.bias, 3 entries (2 passes each)",
    ], good.stderr
    wrong_loss = run(["dlcourse-gradcheck", "model=conv_inpaint", "model.widths=[4,8]"], tmp_path)
    assert wrong_loss.returncode == 2
    assert "loss=pixel_mse" in wrong_loss.stderr and "Traceback" not in wrong_loss.stderr


def test_gradcheck_cli_exits_1_on_fail(tmp_path):
    (tmp_path / "buggy.py").write_text(
        "import torch\nfrom torch import nn\nclass Twice(torch.autograd.Function):\n"
        "    @staticmethod\n    def forward(ctx, x):\n        return x.clone()\n"
        "    @staticmethod\n    def backward(ctx, g):\n        return 2 * g\n"
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        "
        "self.fc = nn.Linear(784, 10)\n    def forward(self, x):\n        return "
        "Twice.apply(self.fc(x.flatten(1)))\n"
    )
    result = run(
        ["dlcourse-gradcheck", "~model", "+model._target_=buggy.Net", "elements_per_parameter=2"],
        tmp_path,
    )
    assert result.returncode == 1
    assert "FAIL" in result.stdout


def test_alexnet_summary_matches_the_lecture():
    cfg = compose_config(["model=alexnet"], config_name="summary")
    fill_model_sizes(cfg.model, (3, 224, 224))  # as dlcourse-summary does; classes: AlexNet's 1000
    model = build(cfg, "model")
    layers = summarize(model, (3, 224, 224))
    shapes = {
        layer.name: layer.output_shape for layer in layers if layer.name.startswith(("conv", "fc"))
    }
    assert shapes == {
        "conv1": (96, 55, 55),
        "conv2": (256, 27, 27),
        "conv3": (384, 13, 13),
        "conv4": (384, 13, 13),
        "conv5": (256, 13, 13),
        "fc6": (4096,),
        "fc7": (4096,),
        "fc8": (1000,),
    }
    assert (
        sum(layer.parameters for layer in layers)
        == sum(p.numel() for p in model.parameters())
        == 60_965_224  # the paper's two-GPU form: "60 million"
    )
    # Neurons: the outputs of the conv and fully-connected layers, computed by hand from the shapes
    # above.
    by_hand = 96 * 55 * 55 + 256 * 27 * 27 + 2 * 384 * 13 * 13 + 256 * 13 * 13 + 4096 + 4096 + 1000
    assert sum(layer.neurons for layer in layers) == by_hand == 659_272  # "about 650,000"
    # Connections: each neuron's multiply-adds, its filter's inputs (conv2, conv4, conv5 see
    # half the maps) or its fully-connected inputs.
    fan_ins = {
        "conv1": 3 * 11 * 11,
        "conv2": 48 * 5 * 5,
        "conv3": 256 * 3 * 3,
        "conv4": 192 * 3 * 3,
        "conv5": 192 * 3 * 3,
        "fc6": 9216,
        "fc7": 4096,
        "fc8": 4096,
    }
    by_hand = sum(layer.neurons * fan_ins.get(layer.name, 0) for layer in layers)
    assert sum(layer.connections for layer in layers) == by_hand == 724_406_816


@pytest.mark.parametrize(
    "kernel, stride, padding, output_padding",
    [(2, 2, 0, 0), (3, 2, 1, 1), (4, 2, 1, 0), (3, 1, 1, 0), (5, 3, 2, 2)],
)
def test_transposed_convolutions_count_the_products_that_reach_the_output(
    kernel, stride, padding, output_padding
):
    layer = torch.nn.ConvTranspose2d(6, 4, kernel, stride, padding, output_padding, bias=False)
    layers = summarize(torch.nn.Sequential(layer), (6, 7, 5))
    # With all inputs and weights 1, each output is the number of products that reach it.
    with torch.no_grad():
        layer.weight.fill_(1.0)
        reached = int(layer(torch.ones(1, 6, 7, 5)).sum())
    assert layers[0].connections == reached


def test_the_inpainting_upsampler_counts_as_by_hand():
    cfg = compose_config(["model=conv_inpaint"], config_name="summary")
    fill_model_sizes(cfg.model, (1, 28, 28))  # (the model adds the mask's channel itself)
    layers = summarize(build(cfg, "model"), (1, 28, 28))
    first_up = next(layer for layer in layers if layer.kind == "ConvTranspose2d")
    # 64 × 7 × 7 inputs, each into a 2 × 2 patch of 32 channels (stride 2: no overlap)
    assert first_up.connections == 64 * 7 * 7 * 32 * 2 * 2 == 401_408


def test_summary_cli_prints_the_table(tmp_path):
    result = run(["dlcourse-summary", "model=cnn"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(64, 7, 7)" in result.stdout and "Total parameters:" in result.stdout
    # The first conv layer (32 filters of 5×5, padded) against a dense layer with its inputs and
    # outputs: 784 × 25,088 weights and 25,088 biases.
    assert "into 25,088 outputs with 832 parameters" in result.stdout
    assert f"would need {784 * 25088 + 25088:,}" in result.stdout
    wrong = run(["dlcourse-summary", "model=alexnet"], tmp_path)  # 28×28 is too small for AlexNet
    assert wrong.returncode == 2 and "AlexNet needs images of at least 63×63" in wrong.stderr


def test_a_kink_between_the_nudges_is_recognised_not_failed():
    # ReLU(x) at x = 0.3e-6 with ε = 1e-6: right slope 1, left slope 0.65, central 0.825; autograd
    # says 1.
    right, left = 1.0, 0.65
    assert judge(1.0, (right + left) / 2, right, left, tolerance=1e-5, atol=1e-8)[2] == "kink"
    # A smooth point (equal one-sided slopes) that disagrees with autograd is a failure.
    assert judge(2.0, 1.0, 1.0, 1.0, tolerance=1e-5, atol=1e-8)[2] == "fail"
    assert judge(1.0, 1.0 + 1e-7, 1.0, 1.0, tolerance=1e-5, atol=1e-8)[2] == "pass"


class Corrupt(torch.autograd.Function):
    """The identity on a weight, whose backward is wrong in a planted way."""

    @staticmethod
    def forward(ctx, weight, mistake):
        ctx.mistake = mistake
        return weight.clone()

    @staticmethod
    def backward(ctx, upstream):
        wrong = upstream.clone()
        if ctx.mistake == "10%":
            wrong *= 1.1
        elif ctx.mistake == "1%":
            wrong *= 1.01
        elif ctx.mistake == "sign":
            wrong = -wrong
        else:  # one entry of the 160, 10 % off
            wrong[3, 5] *= 1.1
        return wrong, None


class Planted(nn.Module):
    def __init__(self, mistake: str) -> None:
        super().__init__()
        self.fc, self.mistake = nn.Linear(16, 10), mistake

    def forward(self, images):
        weight = Corrupt.apply(self.fc.weight, self.mistake)
        return nn.functional.linear(images.flatten(1), weight, self.fc.bias)


@pytest.mark.parametrize("mistake", ["10%", "1%", "sign", "one entry"])
def test_planted_wrong_backwards_fail_and_tiny_steps_are_refused(mistake, capsys):
    """Every entry checked (170 of them), at the default step: each planted mistake fails. At a
    step where float64 rounding would swamp such mistakes (1e-12), the check refuses to run
    instead of passing them."""
    torch.manual_seed(0)
    model = Planted(mistake)
    batch = example_batch(model, (1, 4, 4), batch_size=4)
    checks = gradient_check(model, nn.CrossEntropyLoss(), batch, elements_per_parameter=200)
    weight, bias = checks
    assert not weight.passed and bias.passed, checks
    assert report(checks, tolerance=1e-5, atol=1e-8) is False
    assert "FAIL: fc.weight" in capsys.readouterr().out
    with pytest.raises(UserError, match="epsilon=1e-12 is too small for this loss"):
        gradient_check(model, nn.CrossEntropyLoss(), batch, 200, epsilon=1e-12)


def test_the_report_prints_the_tolerance_really_used(capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    batch = example_batch(model, (1, 4, 4), batch_size=4)
    checks = gradient_check(model, nn.CrossEntropyLoss(), batch, 200, epsilon=1e-5)
    assert report(checks, tolerance=1e-5, atol=1e-8)
    out = capsys.readouterr().out
    rounding = checks[0].atol_used - 1e-8
    assert 0 < rounding < 1e-8  # 100 · 2.2e-16 · |L| / 1e-5, with |L| ≈ 2.3
    assert f"or {checks[0].atol_used:.2g} absolute: atol 1e-08 + float64 rounding" in out


def test_plain_sgd_is_the_lectures_update_by_hand():
    cfg = compose_config(["optimizer=sgd_plain", "optimizer.lr=0.5"])
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build(cfg, "optimizer", params=model.parameters())
    loss = nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,)))
    loss.backward()
    optimizer.step()
    for old, parameter in zip(before, model.parameters()):
        torch.testing.assert_close(parameter.detach(), old - 0.5 * parameter.grad)
    assert any(not torch.equal(old, p) for old, p in zip(before, model.parameters()))
