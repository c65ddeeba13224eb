"""What a dataset asks of the run: its metrics (as per-batch sums), baselines and pictures.

The trainer knows no task: it asks the `Task` that the dataset returns. Batches are tuples
`(inputs, targets, *context)`; the context (an inpainting mask, say) goes to the model, the loss
and the task's metrics after their usual arguments.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from dlcourse.pictures import (
    confusion_matrix,
    confusion_matrix_image,
    decision_boundary,
    evaluation_mode,
    grid,
    labelled_grid,
)


class Task(Protocol):
    name: str  # stored in checkpoints, so tools such as dlcourse-predict know what a model does
    monitor: str  # the validation metric that picks the best checkpoint, e.g. "acc"
    # Every metric the task reports (and "loss"), and whether a higher value is better: which
    # checkpoint is best, and how a sweep report sorts, follow from it.
    higher_is_better: dict[str, bool]

    def batch_sums(
        self, outputs: torch.Tensor, targets: torch.Tensor, *context: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Each metric summed over the batch's samples; the trainer divides by the count once."""

    def baselines(
        self, inputs: torch.Tensor, targets: torch.Tensor, *context: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Predictions of simple non-learned methods, measured like the model."""

    def pictures(
        self, model: nn.Module, batch: tuple[torch.Tensor, ...]
    ) -> dict[str, torch.Tensor]:
        """Images (3, H, W) in [0, 1] that show what the model does on a fixed batch."""


class ClassificationTask:
    """Accuracy as the number of correct predictions, which the trainer turns into a fraction.

    `class_names` name the labels 0, 1, ... in pictures, checkpoints and dlcourse-predict."""

    name = "classification"
    monitor = "acc"
    higher_is_better = {"loss": False, "acc": True}

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = class_names

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"acc": (outputs.argmax(dim=1) == targets).sum()}

    def baselines(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def class_name(self, label: int) -> str:
        """A label's name (its number, for a model with more outputs than the data has classes)."""
        return self.class_names[label] if label < len(self.class_names) else str(label)

    @torch.no_grad()
    def pictures(
        self, model: nn.Module, batch: tuple[torch.Tensor, ...]
    ) -> dict[str, torch.Tensor]:
        """A confusion matrix of the fixed test batch, and the images in it the model got wrong
        (for 2-D points: the decision boundary instead)."""
        images, labels = batch
        with evaluation_mode(model):
            outputs = model(images)
        predictions, num_classes = outputs.argmax(dim=1), outputs.shape[1]
        counts = confusion_matrix(predictions, labels, num_classes).cpu()
        pictures = {
            "confusion_matrix": confusion_matrix_image(
                counts, [self.class_name(i) for i in range(num_classes)]
            )
        }
        wrong = (predictions != labels).nonzero().flatten()
        if images.dim() == 2 and images.shape[1] == 2:  # points in the plane (toy data)
            pictures["decision_boundary"] = decision_boundary(model, images, labels)
        elif len(wrong):
            # Digits fit "7 / 2" on one line; longer names go one per line.
            separator = " / " if all(len(n) <= 2 for n in self.class_names) else "\n"
            captions = [
                f"{self.class_name(p)}{separator}{self.class_name(t)}"
                for p, t in zip(predictions[wrong[:32]].tolist(), labels[wrong[:32]].tolist())
            ]
            title = f"predicted / true: {len(wrong)} of {len(labels)} fixed test images wrong"
            pictures["misclassified"] = labelled_grid(images[wrong[:32]], captions, title=title)
        return pictures


def psnr(mse: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB; a perfect image gets 100 dB rather than infinity."""
    return 10 * torch.log10(peak**2 / mse.clamp_min(1e-10))


class InpaintingTask:
    """MSE and PSNR per image, over the whole image and over the hole only (pixels in [0, 1]).

    The whole-image figures are those of what a user gets: the prediction in the hole, the
    known pixels kept (as dlcourse-predict writes it), not the raw output everywhere.

    Baselines: `unfilled` leaves the masked input as it is; `meanfill` fills each hole pixel with
    that pixel's mean over the training images.
    """

    name = "inpainting"
    monitor = "mse_hole"
    higher_is_better = {
        "loss": False,
        "mse": False,
        "psnr": True,
        "mse_hole": False,
        "psnr_hole": True,
    }

    def __init__(self, mean_image: torch.Tensor) -> None:
        self.mean_image = mean_image  # (C, H, W), on the training device

    def batch_sums(
        self, outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        hole = mask.expand_as(targets).bool()
        filled = torch.where(hole, outputs.float(), targets)  # the known pixels kept
        squared_error = (filled - targets).square()  # (B, C, H, W): zero outside the hole
        mse = squared_error.mean(dim=(1, 2, 3))  # (B,)
        mse_hole = squared_error.sum(dim=(1, 2, 3)) / hole.sum(dim=(1, 2, 3)).clamp_min(1)
        return {
            "mse": mse.sum(),
            "psnr": psnr(mse).sum(),
            "mse_hole": mse_hole.sum(),
            "psnr_hole": psnr(mse_hole).sum(),
        }

    def baselines(
        self, masked: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {"unfilled": masked, "meanfill": torch.where(mask.bool(), self.mean_image, masked)}

    @torch.no_grad()
    def pictures(
        self, model: nn.Module, batch: tuple[torch.Tensor, ...]
    ) -> dict[str, torch.Tensor]:
        """One row per sample: masked input | prediction | ground truth | mask."""
        masked, targets, mask = (t[:8] for t in batch)
        with evaluation_mode(model):
            prediction = model(masked, mask).float().clamp(0, 1)
        columns = [masked, prediction, targets, mask.expand_as(targets)]
        tiles = torch.stack(columns, dim=1).flatten(0, 1)  # (B * 4, C, H, W), row by row
        return {"inpainting": grid(tiles, columns=len(columns))}
