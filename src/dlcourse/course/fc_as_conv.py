"""A fully-connected layer is a convolution whose filter is as large as its input.

    python -m dlcourse.course.fc_as_conv            # MNIST-sized: 784 inputs → 10 units
    python -m dlcourse.course.fc_as_conv --units 100 --size 28

`nn.Linear(784, 10)` and `nn.Conv2d(1, 10, kernel_size=28)` hold the same 7,850 numbers: each
unit's 784 weights, laid out as a 28 × 28 filter, slid over a 28 × 28 image, fit in exactly one
place, so the convolution's one output per filter is the unit's weighted sum. The demo copies
the weights across, checks that both give the same outputs, and prints the parameter counts
beside those of a small convolution (3 × 3 filters), which is where convolutions save: weights
shared across positions instead of one per pixel.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn


def as_convolution(linear: nn.Linear, channels: int, size: int) -> nn.Conv2d:
    """The convolution computing `linear` on (channels, size, size) inputs: its filters are the
    units' weights, reshaped; its biases the units' biases."""
    conv = nn.Conv2d(channels, linear.out_features, kernel_size=size)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, channels, size, size))
        conv.bias.copy_(linear.bias)
    return conv


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--size", type=int, default=28)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    linear = nn.Linear(args.size * args.size, args.units)
    conv = as_convolution(linear, 1, args.size)
    images = torch.randn(4, 1, args.size, args.size)
    dense = linear(images.flatten(1))  # (4, units)
    convolved = conv(images)  # (4, units, 1, 1): one position per filter
    gap = (dense - convolved.flatten(1)).abs().max().item()
    small = nn.Conv2d(1, args.units, kernel_size=3, padding=1)
    print(f"{'layer':<42}{'parameters':>11}  output for one image")
    rows = [
        (f"Linear({args.size * args.size}, {args.units})", linear, (args.units,)),
        (f"Conv2d(1, {args.units}, kernel_size={args.size})", conv, (args.units, 1, 1)),
        (f"Conv2d(1, {args.units}, kernel_size=3, padding=1)", small,
         (args.units, args.size, args.size)),
    ]  # fmt: skip
    for name, module, shape in rows:
        print(f"{name:<42}{parameters(module):>11,}  {shape}")
    print(f"the first two give the same outputs: largest difference {gap:.1e}")


if __name__ == "__main__":
    main()
