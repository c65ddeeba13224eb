"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012), for 3×224×224 images and others.

The paper trained on two GPUs, so conv2, conv4 and conv5 see only the half of the previous
layer's maps that sits on their own GPU: grouped convolutions, `groups=2` (the paper's form:
60,965,224 parameters, its "60 million"). `groups=1` merges the halves into single layers, as
torchvision and most re-implementations do (62,378,344 parameters). Either way 96-256-384-384-256
filters and 4096-4096-1000 fully-connected units. As in torchvision, an adaptive average pool
hands fc6 a 6×6 map at any image size from 63×63 up (at 224×224 it changes nothing), so the same
network trains on a folder of 64×64 photos.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class AlexNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        dropout: float = 0.5,
        image_size: int = 224,
        groups: Literal[1, 2] = 2,
    ) -> None:
        super().__init__()
        if image_size < 63:  # the stride-4 conv1 and three 3×3 / stride-2 pools leave nothing
            raise ValueError(
                f"AlexNet needs images of at least 63×63, these are {image_size}×{image_size}: "
                "resize them (dataset.image_size=64) or use model=cnn"
            )
        self.conv1 = nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=groups)
        self.conv3 = nn.Conv2d(256, 384, kernel_size=3, padding=1)  # sees both halves
        self.conv4 = nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=groups)
        self.conv5 = nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=groups)
        # The paper's local response normalisation, a / (k + α Σ a²)^β over n = 5 neighbouring
        # maps with α = 1e-4: PyTorch's divides α by n, so it is given n · α. Then overlapping
        # 3×3 / stride-2 pooling.
        self.norm = nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.fit_to_fc6 = nn.AdaptiveAvgPool2d((6, 6))
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.norm(self.relu(self.conv1(images))))  # (B, 96, 27, 27)
        x = self.pool(self.norm(self.relu(self.conv2(x))))  # (B, 256, 13, 13)
        x = self.relu(self.conv3(x))  # (B, 384, 13, 13)
        x = self.relu(self.conv4(x))  # (B, 384, 13, 13)
        x = self.pool(self.relu(self.conv5(x)))  # (B, 256, 6, 6); (B, 256, 1, 1) at 64×64
        x = self.fit_to_fc6(x)  # (B, 256, 6, 6) at any size
        x = x.flatten(start_dim=1)  # (B, 9216)
        x = self.relu(self.fc6(self.dropout(x)))  # (B, 4096)
        x = self.relu(self.fc7(self.dropout(x)))  # (B, 4096)
        return self.fc8(x)  # (B, num_classes)
