"""The linear classifier f(x) = Wx + b on the flattened image."""

from __future__ import annotations

import torch
from torch import nn


class LinearClassifier(nn.Module):
    """One score per class, each the dot product of the image with a learned template.

    `zero_init`: start every template at 0 instead of small random numbers. Softmax regression
    is convex, so nothing needs breaking symmetry; and pixels that are background in every
    training image then all get the same weight, where random starting values would stay as
    speckle in the templates (they see a constant input, so training moves them all alike).
    """

    def __init__(
        self, input_size: int = 784, num_classes: int = 10, zero_init: bool = False
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(input_size, num_classes)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(start_dim=1)  # (B, 784)
        return self.linear(x)  # (B, num_classes)
