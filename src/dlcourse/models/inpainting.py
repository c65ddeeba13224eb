"""Networks that predict the complete image from a masked one (and, optionally, the mask)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from dlcourse.models.cnn import conv_stage
from dlcourse.models.mlp import MLP


class MLPInpaint(nn.Module):
    """The lecture's MLP: flatten → hidden ReLU layer(s) → one output per pixel → sigmoid."""

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 28,
        hidden_sizes: Sequence[int] = (512,),
        use_mask: bool = True,
    ) -> None:
        super().__init__()
        num_pixels = channels * image_size * image_size
        in_features = num_pixels + (image_size * image_size if use_mask else 0)
        self.use_mask = use_mask
        self.mlp = MLP(
            input_size=in_features, hidden_sizes=list(hidden_sizes), num_classes=num_pixels
        )

    def forward(self, masked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = masked.flatten(start_dim=1)  # (B, C*H*W)
        if self.use_mask:
            x = torch.cat([x, mask.flatten(start_dim=1)], dim=1)  # (B, (C+1)*H*W)
        x = self.mlp(x)  # (B, C*H*W)
        return torch.sigmoid(x).view_as(masked)  # (B, C, H, W), in the pixel range [0, 1]


def up_stage(
    in_channels: int, out_channels: int, upsampling: str, batch_norm: bool
) -> nn.Sequential:
    """Double the height and width: a transpose convolution, or nearest upsampling + convolution."""
    if upsampling == "transpose":
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        ]
    else:
        layers = [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
        ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConvInpaint(nn.Module):
    """A small convolutional encoder–decoder (U-Net-like).

    Encoder stages halve the image (conv → batch norm → ReLU → max-pool), a bottleneck stage
    works at the smallest size, and decoder stages double it back (transpose convolution, or
    nearest upsampling + convolution). With `skip_connections`, each decoder stage also sees
    what the encoder saw at that size, so the pixels that were kept need not squeeze through the
    bottleneck and the network can spend itself on the hole.
    """

    def __init__(
        self,
        channels: int = 1,
        widths: Sequence[int] = (32, 64),
        use_mask: bool = True,
        batch_norm: bool = True,
        upsampling: Literal["transpose", "nearest"] = "transpose",
        skip_connections: bool = True,
        bottleneck_layers: int = 1,
    ) -> None:
        super().__init__()
        self.use_mask = use_mask
        self.skip_connections = skip_connections
        widths = list(widths)
        stage_inputs = [channels + int(use_mask), *widths[:-1]]  # what each encoder stage sees
        self.encoder = nn.ModuleList(
            conv_stage(i, o, 3, 1, 1, 2, batch_norm) for i, o in zip(stage_inputs, widths)
        )
        # Each 3×3 layer at the smallest size widens the receptive field by 2 pixels there (8 in the
        # image at 1/4 size): cheap reach into the middle of large holes.
        self.bottleneck = nn.Sequential(
            *(
                conv_stage(widths[-1], widths[-1], 3, 1, 1, 0, batch_norm)
                for _ in range(bottleneck_layers)
            )
        )
        decoder_widths = [*widths[-2::-1], widths[0]]
        self.up = nn.ModuleList(
            up_stage(i, o, upsampling, batch_norm) for i, o in zip(widths[::-1], decoder_widths)
        )
        skip_widths = [width if skip_connections else 0 for width in stage_inputs[::-1]]
        self.fuse = nn.ModuleList(
            conv_stage(o + s, o, 3, 1, 1, 0, batch_norm)
            for o, s in zip(decoder_widths, skip_widths)
        )
        self.head = nn.Conv2d(widths[0], channels, kernel_size=1)

    def forward(self, masked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([masked, mask], dim=1) if self.use_mask else masked  # (B, C+1, 28, 28)
        skips = []
        for stage in self.encoder:
            skips.append(x)  # (B, C+1, 28, 28), then (B, 32, 14, 14)
            x = stage(x)  # (B, 32, 14, 14), then (B, 64, 7, 7)
        x = self.bottleneck(x)  # (B, 64, 7, 7)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips)):
            x = up(x)  # (B, 32, 14, 14), then (B, 32, 28, 28)
            x = fuse(torch.cat([x, skip], dim=1) if self.skip_connections else x)  # same shape
        return torch.sigmoid(self.head(x))  # (B, C, 28, 28), in the pixel range [0, 1]
