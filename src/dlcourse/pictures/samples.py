"""Pictures of test images and what the model made of them: the worst errors (top losses) and
inpainting's masked input, prediction and ground truth with the hole outlined."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from dlcourse.pictures.drawing import captioned, enlarge, stretch, titled

HOLE_EDGE = torch.tensor([1.0, 0.15, 0.15])  # red: visible on black digits and white alike
HOLE_FILL = torch.tensor([0.15, 0.2, 0.45])  # the masked input's hole, unlike any digit pixel


def top_losses_image(
    images: torch.Tensor, captions: list[str], seen: int, split: str
) -> torch.Tensor:
    """The wrongly classified images with the largest loss first, each captioned with its true
    class, the prediction with its probability, and its loss."""
    title = f"worst {len(images)} errors of {seen:,} {split} images, largest loss first"
    note = "loss: −log p(true class) under the model's softmax"
    return titled(captioned(stretch(images.float().cpu()), captions, columns=8), title, note)


def top_loss_caption(true: str, predicted: str, probability: float, loss: float) -> str:
    return f"true: {true}\npred: {predicted} ({probability:.0%})\nloss {loss:.2f}"


def inpainting_image(
    masked: torch.Tensor, prediction: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """One row per image: masked input (hole filled dark blue) | prediction | ground truth, the
    hole outlined in red on each, and the mask itself."""
    hole = enlarge(mask.expand_as(targets)[:, :1].float())[:, :1] > 0.5  # (B, 1, H', W')
    edge = F.max_pool2d(hole.float(), 3, stride=1, padding=1).bool() & ~hole  # just outside
    masked, prediction, targets = (enlarge(t.clamp(0, 1)) for t in (masked, prediction, targets))
    masked = torch.where(hole, HOLE_FILL[:, None, None], masked)
    outlined = [
        torch.where(edge, HOLE_EDGE[:, None, None], t) for t in (masked, prediction, targets)
    ]
    columns = [*outlined, hole.float().expand_as(targets)]
    tiles = torch.stack(columns, dim=1).flatten(0, 1)  # (B * 4, 3, H', W'), row by row
    headers = ["masked input", "prediction", "ground truth", "mask (hole white)"]
    body = captioned(tiles, [], columns=len(columns), headers=headers)
    return titled(
        body,
        f"inpainting of {len(targets)} fixed test images",
        "the hole is outlined in red; prediction: the model's output everywhere",
    )
