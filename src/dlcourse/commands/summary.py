"""A model's layers, in the order data flows through them: output shape, parameters, neurons,
connections.

    dlcourse-summary model=cnn
    dlcourse-summary model=alexnet input_shape=[3,224,224]   # ~61 million parameters, ~650,000
    neurons
    dlcourse-summary model=conv_inpaint

Neurons are the outputs of the layers that have weights (convolution and fully-connected units),
counted for one input — the figure papers such as AlexNet's quote; ReLU, pooling and
normalisation outputs are listed but not counted. Connections are the multiply-adds those
neurons make for one input: each output of a convolution takes (input channels / groups) ×
kernel height × kernel width of them, each fully-connected unit one per input feature; a
transposed convolution multiplies each input value by its group's filter weights, counted
where the product lands inside the output (with stride 2, a quarter of outputs × fan-in).
Products with a convolution's zero padding are counted (the operation performs them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from dlcourse.course.gradient_check import example_batch
from dlcourse.infrastructure.config import build, config_dir, fill_model_sizes, to_plain_dict
from dlcourse.infrastructure.errors import UserError, exit_on_user_error
from dlcourse.infrastructure.schema import validate_config, validate_input_shape


@dataclass
class Layer:
    name: str
    kind: str
    output_shape: tuple[int, ...]  # for one input (no batch dimension)
    parameters: int  # counted at the layer's first call only (AlexNet reuses its ReLU and pool)
    neurons: int
    connections: int  # multiply-adds for one input


def summarize(model: nn.Module, input_shape: Sequence[int]) -> list[Layer]:
    """Run one example input through `model` and record every leaf module it calls."""
    layers: list[Layer] = []
    seen: set[str] = set()

    def record(name: str, module: nn.Module, inputs: tuple, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            return
        own = sum(p.numel() for p in module.parameters(recurse=False)) if name not in seen else 0
        seen.add(name)
        neurons = (
            output[0].numel()
            if getattr(module, "weight", None) is not None and not is_normalization(module)
            else 0
        )
        shape = tuple(output.shape[1:])
        kind = type(module).__name__
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            connections = transposed_connections(module, inputs[0].shape[2:], output.shape[2:])
        else:
            connections = neurons * fan_in(module)
        layers.append(Layer(name, kind, shape, own, neurons, connections))

    leaves = [
        (name, module) for name, module in model.named_modules() if not list(module.children())
    ]
    handles = [
        module.register_forward_hook(lambda m, args, out, name=name: record(name, m, args, out))
        for name, module in leaves
    ]
    inputs, _, *context = example_batch(model, input_shape, batch_size=1)
    model.eval()  # batch norm with a batch of one
    try:
        with torch.no_grad():
            model(inputs, *context)
    except (RuntimeError, TypeError, ValueError) as error:
        raise UserError(
            f"{type(model).__name__} cannot take an input of shape {tuple(input_shape)}: "
            f"{str(error).splitlines()[0]}. Set input_shape=[C,H,W] (AlexNet: [3,224,224])"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return layers


def fan_in(module: nn.Module) -> int:
    """The inputs each output of a convolution or fully-connected layer multiplies and adds."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels // module.groups * module.weight[0, 0].numel()
    if isinstance(module, nn.Linear):
        return module.in_features
    return 0


def transposed_connections(
    module: nn.modules.conv._ConvTransposeNd, in_size: Sequence[int], out_size: Sequence[int]
) -> int:
    """A transposed convolution's multiply-adds for one input: each input value times each
    weight of its group's filters, counted where the product lands inside the output (padding
    crops the border). Not outputs × fan-in: with stride s, each output takes only about
    1 / s² of the kernel (a stride-2, 2×2 one: one weight per input channel, not four)."""
    landing = 1  # (input position, kernel position) pairs that reach the output, per dimension
    for size, out, kernel, stride, padding, dilation in zip(
        in_size, out_size, module.kernel_size, module.stride, module.padding, module.dilation
    ):
        landing *= sum(
            0 <= i * stride - padding + k * dilation < out
            for i in range(size)
            for k in range(kernel)
        )
    return landing * module.in_channels * module.out_channels // module.groups


def is_normalization(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm))


def print_summary(model: nn.Module, layers: list[Layer], input_shape: Sequence[int]) -> None:
    width = max(len(layer.name) for layer in layers)
    print(f"{type(model).__name__} for inputs of shape {tuple(input_shape)}")
    print(
        f"{'layer':<{width}}  {'type':<18} {'output shape':<18} {'parameters':>12} {'neurons':>10} "
        f"{'connections':>13}"
    )
    for layer in layers:
        print(
            f"{layer.name:<{width}}  {layer.kind:<18} {str(layer.output_shape):<18} "
            f"{layer.parameters:>12,} {layer.neurons:>10,} {layer.connections:>13,}"
        )
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"Total parameters: {total:,} ({trainable:,} trainable)")
    neurons = sum(layer.neurons for layer in layers)
    print(f"Total neurons (outputs of conv and linear layers, per input): {neurons:,}")
    connections = sum(layer.connections for layer in layers)
    print(f"Total connections (multiply-adds per input): {connections:,}")
    print_fully_connected_equivalent(layers, input_shape)


def print_fully_connected_equivalent(layers: list[Layer], input_shape: Sequence[int]) -> None:
    """What the first convolution would cost as a fully-connected layer with the same inputs and
    outputs: the lecture's case against fully-connected layers on images."""
    first = next((layer for layer in layers if layer.neurons), None)
    if first is None or first.kind not in ("Conv1d", "Conv2d", "Conv3d"):
        return
    inputs = math.prod(input_shape)
    dense = inputs * first.neurons + first.neurons
    print(
        f"{first.name} turns the {inputs:,} input values into {first.neurons:,} outputs with "
        f"{first.parameters:,} parameters; a fully-connected layer doing the same would need "
        f"{dense:,} ({dense / max(first.parameters, 1):,.0f}× as many)"
    )


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="summary")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    input_shape = validate_input_shape(to_plain_dict(cfg)["input_shape"])
    fill_model_sizes(cfg.model, input_shape)  # null sizes: this input's; classes: the default
    validate_config({"seed": 0, **to_plain_dict(cfg)}, groups=("model",))
    model = build(cfg, "model")
    print_summary(model, summarize(model, input_shape), input_shape)


if __name__ == "__main__":
    main()
