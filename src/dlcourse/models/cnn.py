"""AlexNet-style CNN for small images: conv stages, then fully-connected layers with dropout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def per_stage(value: int | Sequence[int], num_stages: int, name: str) -> list[int]:
    """Accept one number for every stage, or one number per stage."""
    values = [value] * num_stages if isinstance(value, int) else list(value)
    if len(values) != num_stages:
        raise ValueError(f"{name} has {len(values)} entries but there are {num_stages} conv stages")
    return values


def conv_stage(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    pool_size: int,
    batch_norm: bool,
) -> nn.Sequential:
    """conv → (batch norm) → (max-pool) → ReLU; a pool size of 0 or 1 means no pooling.

    The usual order is ReLU, then pool; the values are the same either way (ReLU keeps numbers in
    order, so the largest stays the largest), and pooling first leaves ReLU and its gradient a
    quarter of the numbers to do (2×2 pools)."""
    layers: list[nn.Module] = [
        # A bias is redundant right before batch norm, which subtracts the mean anyway.
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    if pool_size > 1:
        layers.append(nn.MaxPool2d(pool_size))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@torch.no_grad()
def output_size(features: nn.Module, in_channels: int, image_size: int) -> int:
    """How many numbers the conv stages make of one image: it depends on every stride and pool,
    so it is measured once, on a blank image."""
    try:
        return features(torch.zeros(1, in_channels, image_size, image_size)).numel()
    except RuntimeError:  # a stage's output would be smaller than 1×1
        raise ValueError(
            f"{image_size}×{image_size} images are too small for these conv stages (they shrink "
            "them to nothing): use larger images or less pooling (model.pool_sizes)"
        ) from None


class CNN(nn.Module):
    """Conv stages (filter sizes, number of filters, padding, stride, pooling, batch norm from the
    config), then hidden fully-connected layers with ReLU and dropout, then class scores."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        kernel_sizes: int | Sequence[int] = 5,
        strides: int | Sequence[int] = 1,
        paddings: int | Sequence[int] = 2,
        pool_sizes: int | Sequence[int] = 2,
        batch_norm: bool = False,
        hidden_sizes: Sequence[int] = (128,),
        dropout: float = 0.5,
        feature_dropout: float | None = None,
    ) -> None:
        """`dropout` follows each hidden layer; `feature_dropout` the flattened conv features
        (None: the same as `dropout`)."""
        super().__init__()
        num_stages = len(channels)
        stage_settings = zip(
            [in_channels, *channels[:-1]],
            channels,
            per_stage(kernel_sizes, num_stages, "kernel_sizes"),
            per_stage(strides, num_stages, "strides"),
            per_stage(paddings, num_stages, "paddings"),
            per_stage(pool_sizes, num_stages, "pool_sizes"),
        )
        self.features = nn.Sequential(*(conv_stage(*s, batch_norm) for s in stage_settings))
        flat_size = output_size(self.features, in_channels, image_size)
        feature_dropout = dropout if feature_dropout is None else feature_dropout
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(feature_dropout)]
        in_features = flat_size
        for hidden_size in hidden_sizes:
            layers += [nn.Linear(in_features, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            in_features = hidden_size
        layers.append(nn.Linear(in_features, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images)  # (B, channels[-1], H', W'), e.g. (B, 64, 7, 7) for the default
        return self.classifier(x)  # (B, num_classes)
