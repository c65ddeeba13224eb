"""What a classifier's confusion matrix says: per-class precision, recall and F1, and the pairs
of classes it confuses most. Counted over a whole split (tasks.ClassificationReview) and written
to metrics.json."""

from __future__ import annotations

import torch


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """counts[t, p]: how many images of class t were predicted as p."""
    return torch.bincount(labels * num_classes + predictions, minlength=num_classes**2).view(
        num_classes, num_classes
    )


def class_report(counts: torch.Tensor, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Each class's precision (of the images predicted as it, the share that are it), recall
    (of its images, the share found) and F1 (their harmonic mean), and its support (images).
    A class never predicted has precision 0, as scikit-learn's zero_division=0 gives."""
    counts = counts.double()
    correct = counts.diag()
    predicted, actual = counts.sum(dim=0), counts.sum(dim=1)
    precision = correct / predicted.clamp_min(1)
    recall = correct / actual.clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return {
        name: {
            "precision": precision[i].item(),
            "recall": recall[i].item(),
            "f1": f1[i].item(),
            "support": int(actual[i].item()),
        }
        for i, name in enumerate(class_names)
    }


def most_confused(counts: torch.Tensor, class_names: list[str], top: int = 5) -> list[dict]:
    """The `top` largest off-diagonal counts, largest first: which true class was taken for
    which, how often (pairs never confused are left out)."""
    off_diagonal = counts.clone()
    off_diagonal.fill_diagonal_(0)
    values, cells = off_diagonal.flatten().sort(descending=True, stable=True)
    num_classes = len(counts)
    return [
        {
            "true": class_names[cell // num_classes],
            "predicted": class_names[cell % num_classes],
            "count": int(value),
        }
        for value, cell in zip(values[:top].tolist(), cells[:top].tolist())
        if value > 0
    ]


def report_table(classes: dict[str, dict[str, float]], most_confused: list[dict]) -> str:
    """The per-class report as a table for the log, then the most confused pairs."""
    width = max(8, *(len(name) for name in classes))
    lines = [f"{'class':<{width}}  precision  recall     f1  images"]
    for name, row in classes.items():
        lines.append(
            f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}"
            f"  {row['support']:6d}"
        )
    # Three pairs keep the line short; metrics.json has more.
    pairs = ", ".join(f"{p['true']} as {p['predicted']} ({p['count']})" for p in most_confused[:3])
    lines.append(f"most confused (true as predicted): {pairs or 'none'}")
    return "\n".join(lines)
