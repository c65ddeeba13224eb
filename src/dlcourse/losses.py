"""Losses that torch.nn does not have in the form the course uses."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F


class OneHotMSELoss(nn.Module):
    """½‖y − ŷ‖² between the class scores ŷ and the one-hot target y, averaged over the batch."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(targets, self.num_classes).to(outputs.dtype)  # (B, num_classes)
        return 0.5 * (outputs - one_hot).pow(2).sum(dim=1).mean()


class PixelLoss(nn.Module):
    """Reconstruction loss between a predicted and a complete image, optionally weighted by hole.

    Per image, the sum over pixels of w · e, where e = ½(y − ŷ)² (`kind: mse`, so unweighted it is
    ½‖y − ŷ‖²) or |y − ŷ| (`kind: l1`), and w = `hole_weight` on hole pixels and `kept_weight`
    elsewhere (`kept_weight: 0` gives a hole-only loss). `reduction` averages over the batch
    (`mean`) or over the batch and every pixel (`pixel_mean`, the scale of `F.mse_loss`).
    """

    def __init__(
        self,
        kind: Literal["mse", "l1"] = "mse",
        hole_weight: float = 1.0,
        kept_weight: float = 1.0,
        reduction: Literal["mean", "pixel_mean"] = "mean",
    ) -> None:
        super().__init__()
        self.kind = kind
        self.hole_weight = hole_weight
        self.kept_weight = kept_weight
        self.reduction = reduction

    def forward(
        self, outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        difference = (
            outputs.to(targets.dtype) - targets
        )  # float32 under autocast, float64 in gradcheck
        error = (
            0.5 * difference.square() if self.kind == "mse" else difference.abs()
        )  # (B, C, H, W)
        weight = self.kept_weight + (self.hole_weight - self.kept_weight) * mask  # (B, 1, H, W)
        per_image = (weight * error).flatten(start_dim=1).sum(dim=1)  # (B,)
        if self.reduction == "pixel_mean":
            return per_image.mean() / error[0].numel()
        return per_image.mean()
