"""Every model runs forward and backward, with the right output shape and a gradient everywhere."""

from __future__ import annotations

import copy

import pytest
import torch

from dlcourse.models import CNN, MLP, AlexNet, ConvInpaint, LinearClassifier, MLPInpaint
from dlcourse.models.mlp import ACTIVATIONS


def assert_trains(model: torch.nn.Module, inputs: torch.Tensor, num_classes: int) -> None:
    outputs = model(inputs)
    assert outputs.shape == (inputs.shape[0], num_classes)
    outputs.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def digits(batch_size: int = 4) -> torch.Tensor:
    return torch.randn(batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_linear_is_wx_plus_b():
    model = LinearClassifier(input_size=784, num_classes=10)
    images = digits()
    expected = images.flatten(1) @ model.linear.weight.T + model.linear.bias
    torch.testing.assert_close(model(images), expected)
    assert_trains(model, images, 10)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_with_each_activation(activation):
    model = MLP(hidden_sizes=[32, 16], activation=activation, dropout=0.1)
    assert_trains(model, digits(), 10)
    assert isinstance(model.hidden[1], ACTIVATIONS[activation])


def test_mlp_rejects_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLP(activation="swish")


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the default two 5×5 stages with pooling
        {
            "channels": [8, 16, 16],
            "kernel_sizes": [5, 3, 3],
            "paddings": [2, 1, 1],
            "pool_sizes": [2, 2, 0],
        },
        {
            "channels": [8, 16],
            "kernel_sizes": 3,
            "strides": [2, 1],
            "paddings": 1,
            "batch_norm": True,
        },
        {"channels": [4], "hidden_sizes": [], "dropout": 0.0},
    ],
)
def test_cnn_variants(settings):
    model = CNN(**settings)
    model.train()  # batch norm needs a batch of more than one image in train mode
    assert_trains(model, digits(), 10)


def test_cnn_layer_settings_reach_the_layers():
    model = CNN(
        channels=[6, 12],
        kernel_sizes=[5, 3],
        strides=[1, 2],
        paddings=[0, 1],
        pool_sizes=[2, 0],
        batch_norm=True,
    )
    first, second = model.features[0][0], model.features[1][0]
    assert (first.out_channels, first.kernel_size, first.padding) == (6, (5, 5), (0, 0))
    assert (second.out_channels, second.kernel_size, second.stride) == (12, (3, 3), (2, 2))
    assert isinstance(model.features[0][1], torch.nn.BatchNorm2d)
    # 28 → conv 5×5 → 24 → pool → 12 → conv 3×3 stride 2, padding 1 → 6: 12 × 6 × 6 features
    assert model.classifier[2].in_features == 12 * 6 * 6


def test_cnn_pools_before_relu_with_the_values_and_gradients_of_relu_then_pool():
    """conv_stage pools first, to spare ReLU three numbers in four: the textbook order (ReLU,
    then pool) must give the same outputs and the same gradients, to the bit."""
    torch.manual_seed(0)
    model = CNN(channels=[8, 16], kernel_sizes=3, paddings=1, pool_sizes=2, batch_norm=True)
    textbook = copy.deepcopy(model)
    for stage in textbook.features:  # conv, batch norm, pool, ReLU → conv, batch norm, ReLU, pool
        assert isinstance(stage[2], torch.nn.MaxPool2d) and isinstance(stage[3], torch.nn.ReLU)
        stage[2], stage[3] = stage[3], stage[2]
    images = digits()
    for network in (model, textbook):
        network.train()
        torch.manual_seed(1)  # the same dropout masks
        network(images).square().sum().backward()
    assert torch.equal(model.eval()(images), textbook.eval()(images))
    for (name, ours), theirs in zip(model.named_parameters(), textbook.parameters()):
        assert torch.equal(ours.grad, theirs.grad), name


def test_cnn_rejects_mismatched_stage_lists():
    with pytest.raises(ValueError, match="kernel_sizes has 3 entries but there are 2 conv stages"):
        CNN(channels=[8, 16], kernel_sizes=[3, 3, 3])


@pytest.mark.parametrize(("groups", "total"), [(2, 60_965_224), (1, 62_378_344)])
def test_alexnet_forward_backward_and_parameter_count(groups, total):
    """groups=2: the paper's split of conv2, conv4 and conv5 over two GPUs (each filter sees half
    of the previous layer's maps); groups=1: the halves merged, as torchvision has it."""
    model = AlexNet(groups=groups)
    split = {1: groups, 3: groups, 4: groups}  # conv2, conv4, conv5 (by position)
    conv = [(3, 96, 11), (96, 256, 5), (256, 384, 3), (384, 384, 3), (384, 256, 3)]
    fully_connected = [(256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)]
    expected = sum(
        c_in // split.get(i, 1) * c_out * k * k + c_out for i, (c_in, c_out, k) in enumerate(conv)
    )
    expected += sum(n_in * n_out + n_out for n_in, n_out in fully_connected)
    assert sum(p.numel() for p in model.parameters()) == expected == total
    assert_trains(model, torch.randn(2, 3, 224, 224), 1000)


def test_alexnets_normalisation_is_the_papers():
    """b = a / (k + α Σ a²)^β over the n = 5 maps around each (zero-padded at the ends), with the
    paper's k = 2, α = 1e-4, β = 0.75 — not PyTorch's α / n."""
    activity = torch.rand(1, 8, 3, 3) * 50
    squares = torch.nn.functional.pad(activity.square(), (0, 0, 0, 0, 2, 2))  # channels padded
    sums = torch.stack([squares[:, c : c + 5].sum(dim=1) for c in range(8)], dim=1)
    by_hand = activity / (2 + 1e-4 * sums) ** 0.75
    torch.testing.assert_close(AlexNet().norm(activity), by_hand)


def assert_inpaints(model: torch.nn.Module, channels: int = 1) -> None:
    masked, mask = torch.rand(4, channels, 28, 28), (torch.rand(4, 1, 28, 28) > 0.7).float()
    outputs = model(masked, mask)
    assert outputs.shape == masked.shape and outputs.min() >= 0 and outputs.max() <= 1
    outputs.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, (
            f"{name} got no gradient"
        )


@pytest.mark.parametrize("use_mask", [True, False])
def test_mlp_inpaint(use_mask):
    model = MLPInpaint(hidden_sizes=[64], use_mask=use_mask)
    assert model.mlp.hidden[0].in_features == 784 * (2 if use_mask else 1)
    assert_inpaints(model)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"upsampling": "nearest"},
        {"use_mask": False, "batch_norm": False},
        {"channels": 3, "widths": [8, 16]},
    ],
)
def test_conv_inpaint(settings):
    model = ConvInpaint(**{"widths": [8, 16], **settings})
    assert_inpaints(model, channels=settings.get("channels", 1))
    first_conv = model.encoder[0][0]  # the first stage's convolution
    assert first_conv.in_channels == settings.get("channels", 1) + int(
        settings.get("use_mask", True)
    )
