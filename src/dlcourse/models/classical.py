"""What was known before deep learning, in the same harness: template matching and nearest
neighbours.

Neither has trainable parameters: `fit` reads the training batches once (no gradient steps), and
then they are validated, tested and pictured like any model. Both return class scores (B, C).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn


def standardize(flat: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit length per row: the dot product of two such rows is their NCC."""
    centred = flat - flat.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


class TemplateNCC(nn.Module):
    """Normalised cross-correlation of an image with each class's mean training image.

    score_c = ⟨x − x̄, t_c − t̄_c⟩ / (‖x − x̄‖ ‖t_c − t̄_c‖) ∈ [−1, 1]; the best-matching template
    wins.
    """

    def __init__(self, num_classes: int = 10, input_size: int = 784) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(num_classes, input_size))
        self.register_buffer("counts", torch.zeros(num_classes))

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, ...]]) -> None:
        for images, labels, *_ in batches:
            self.sums.index_add_(0, labels, images.flatten(start_dim=1).to(self.sums.dtype))
            self.counts += torch.bincount(labels, minlength=len(self.counts)).to(self.counts.dtype)

    @property
    def templates(self) -> torch.Tensor:
        """The per-class mean images, (C, input_size)."""
        return self.sums / self.counts.clamp_min(1)[:, None]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = standardize(images.flatten(start_dim=1))  # (B, 784)
        return x @ standardize(self.templates).T  # (B, C)


class NearestNeighbor(nn.Module):
    """Retrieval: each image takes the label(s) of the most similar training image(s).

    Similarity is the L2 distance or the cosine over pixels, computed on the device against the
    stored training set in chunks (so memory stays bounded); `k` > 1 lets the k nearest vote.
    """

    def __init__(
        self,
        num_classes: int = 10,
        metric: Literal["l2", "cosine"] = "l2",
        k: int = 1,
        chunk_size: int = 8192,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.metric = metric
        self.k = k
        self.chunk_size = chunk_size
        self.register_buffer("memory", torch.zeros(0, 0))  # the training images, flattened
        self.register_buffer("memory_labels", torch.zeros(0, dtype=torch.long))

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, ...]]) -> None:
        images, labels = zip(
            *((images.flatten(start_dim=1), labels) for images, labels, *_ in batches)
        )
        self.memory = torch.cat(images).float()
        self.memory_labels = torch.cat(labels)

    def distances(self, x: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
        """(B, D) against (N, D) → (B, N); smaller is more similar."""
        if self.metric == "cosine":
            return -(nn.functional.normalize(x, dim=1) @ nn.functional.normalize(stored, dim=1).T)
        # ‖x − m‖² = ‖x‖² − 2 x·m + ‖m‖², as one matrix product instead of B × N differences.
        return x.square().sum(dim=1, keepdim=True) - 2 * x @ stored.T + stored.square().sum(dim=1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(start_dim=1).float()  # (B, D)
        scores = torch.zeros(len(x), self.num_classes, device=x.device)
        if len(self.memory) == 0:  # not fitted yet: no opinion
            return scores
        k = min(self.k, len(self.memory))
        best = torch.full((len(x), 0), float("inf"), device=x.device)
        best_labels = torch.zeros(len(x), 0, dtype=torch.long, device=x.device)
        for start in range(0, len(self.memory), self.chunk_size):
            chunk = self.distances(x, self.memory[start : start + self.chunk_size])  # (B, chunk)
            labels = self.memory_labels[start : start + self.chunk_size].expand(len(x), -1)
            best, index = torch.cat([best, chunk], dim=1).topk(k, dim=1, largest=False)  # (B, k)
            best_labels = torch.cat([best_labels, labels], dim=1).gather(1, index)
        scores.scatter_add_(1, best_labels, torch.ones_like(best))  # the k nearest vote
        scores.scatter_add_(
            1, best_labels[:, :1], torch.full_like(best[:, :1], 0.5)
        )  # ties: the nearest decides
        return scores  # (B, C)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # The stored set's size is known only once fitted: take the size of the one being loaded.
        for name in ("memory", "memory_labels"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
