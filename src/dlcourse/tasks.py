"""What a dataset asks of the run: its metrics (as per-batch sums), baselines and pictures.

The trainer knows no task: it asks the `Task` that the dataset returns. Batches are tuples
`(inputs, targets, *context)`; the context (an inpainting mask, say) goes to the model, the loss
and the task's metrics after their usual arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from dlcourse.confusion import class_report, confusion_matrix, most_confused
from dlcourse.infrastructure.distributed import SingleProcess
from dlcourse.pictures.charts import confusion_matrix_image, decision_boundary
from dlcourse.pictures.drawing import titled
from dlcourse.pictures.learned import evaluation_mode
from dlcourse.pictures.samples import inpainting_image, top_loss_caption, top_losses_image

TOP_LOSSES = 24  # the worst errors a review keeps (their images), over any number of batches


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

    def review(self) -> Review:
        """What to keep of a split's outputs beyond its metrics, as they are measured."""


class Review(Protocol):
    """A split's outputs, looked at whole while they are measured (dlcourse.metrics.measure)."""

    def add(self, outputs: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> None: ...
    def merge(self, processes: SingleProcess) -> None: ...
    def pictures(self, split: str) -> dict[str, torch.Tensor]: ...
    def summary(self) -> dict: ...


class NoReview:
    """Keeps nothing: tasks whose pictures come from their fixed batch alone."""

    def add(self, outputs: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> None:
        pass

    def merge(self, processes: SingleProcess) -> None:
        pass

    def pictures(self, split: str) -> dict[str, torch.Tensor]:
        return {}

    def summary(self) -> dict:
        return {}


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
        """For 2-D points, the decision boundary; images are reviewed whole (`review`)."""
        inputs, labels = batch
        if inputs.dim() == 2 and inputs.shape[1] == 2:  # points in the plane (toy data)
            boundary = decision_boundary(model, inputs, labels)
            title = f"decision boundary, {len(labels)} fixed test points"
            note = "background: the predicted class; dots: each point's true class"
            return {"decision_boundary": titled(boundary, title, note)}
        return {}

    def review(self) -> ClassificationReview:
        return ClassificationReview(self.class_name)


class ClassificationReview:
    """Every image of a split, looked at as it is measured: the confusion matrix, and the worst
    errors (the wrongly classified images of largest loss, −log p(true class))."""

    def __init__(self, class_name: Callable[[int], str], keep: int = TOP_LOSSES) -> None:
        self.class_name, self.keep = class_name, keep
        self.counts: torch.Tensor | None = None  # (classes, classes), counts[true, predicted]
        self.worst: dict[str, torch.Tensor] = {}  # images, losses, labels, predictions, p
        self.seen = self.seen_here = 0  # images counted: by every rank, by this one

    @torch.no_grad()
    def add(self, outputs: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> None:
        images, labels = batch
        outputs = outputs.float()
        predictions = outputs.argmax(dim=1)
        counts = confusion_matrix(predictions, labels, outputs.shape[1])
        self.counts = counts if self.counts is None else self.counts + counts
        self.seen += len(labels)
        self.seen_here += len(labels)
        if images.dim() != 4:  # 2-D points: the decision boundary shows their errors
            return
        wrong = (predictions != labels).nonzero().flatten()
        probabilities = outputs[wrong].softmax(dim=1)
        found = {
            "images": images[wrong],
            "losses": F.cross_entropy(outputs[wrong], labels[wrong], reduction="none"),
            "labels": labels[wrong],
            "predictions": predictions[wrong],
            "p": probabilities.gather(1, predictions[wrong, None]).flatten(),
        }
        if self.worst:
            found = {name: torch.cat([self.worst[name], found[name]]) for name in found}
        order = found["losses"].argsort(descending=True)[: self.keep]
        self.worst = {name: values[order] for name, values in found.items()}

    def merge(self, processes: SingleProcess) -> None:
        """Every rank's counts summed (the worst errors stay those of this rank's share)."""
        if self.counts is not None:
            cells = {str(i): value for i, value in enumerate(self.counts.flatten())}
            cells, self.seen = processes.all_reduce_sums(cells, self.seen)
            summed = torch.stack([cells[str(i)] for i in range(self.counts.numel())])
            self.counts = summed.round().long().view_as(self.counts)

    def names(self) -> list[str]:
        return [self.class_name(label) for label in range(len(self.counts))]

    def pictures(self, split: str) -> dict[str, torch.Tensor]:
        if self.counts is None:
            return {}
        counts = self.counts.cpu()
        title = f"confusion matrix, {split} set"
        pictures = {"confusion_matrix": confusion_matrix_image(counts, self.names(), title)}
        if self.worst and len(self.worst["losses"]):
            worst = {name: values.cpu() for name, values in self.worst.items()}
            captions = [
                top_loss_caption(self.class_name(t), self.class_name(p), probability, loss)
                for t, p, probability, loss in zip(
                    worst["labels"].tolist(), worst["predictions"].tolist(),
                    worst["p"].tolist(), worst["losses"].tolist(),
                )
            ]  # fmt: skip
            images = worst["images"]
            pictures["top_losses"] = top_losses_image(images, captions, self.seen_here, split)
        return pictures

    def summary(self) -> dict:
        """Per-class precision, recall and F1, and the most confused pairs (metrics.json)."""
        if self.counts is None:
            return {}
        counts, names = self.counts.cpu(), self.names()
        return {
            "classes": class_report(counts, names),
            "most_confused": most_confused(counts, names),
        }


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
        return {"inpainting": inpainting_image(masked, prediction, targets, mask)}

    def review(self) -> NoReview:
        return NoReview()
