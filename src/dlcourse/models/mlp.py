"""Multi-layer perceptron: flatten, then hidden layers with a chosen activation."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    # No non-linearity: the layers multiply out to one matrix, W₃W₂W₁x — a linear classifier.
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """input → [Linear → activation → dropout] per hidden size → Linear → class scores."""

    def __init__(
        self,
        input_size: int = 784,
        hidden_sizes: list[int] = (800,),
        num_classes: int = 10,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_features = input_size
        for hidden_size in hidden_sizes:
            layers += [nn.Linear(in_features, hidden_size), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = hidden_size
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(start_dim=1)  # (B, 784)
        x = self.hidden(x)  # (B, hidden_sizes[-1])
        return self.head(x)  # (B, num_classes)
