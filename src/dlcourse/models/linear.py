"""The linear classifier f(x) = Wx + b on the flattened image."""

from __future__ import annotations

import torch
from torch import nn


class LinearClassifier(nn.Module):
    """One score per class, each the dot product of the image with a learned template."""

    def __init__(self, input_size: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(input_size, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(start_dim=1)  # (B, 784)
        return self.linear(x)  # (B, num_classes)
