"""The activation functions of an MLP, and their derivatives, side by side.

    python -m dlcourse.course.activations                       # table, and activations.png
    python -m dlcourse.course.activations --out outputs/a.png   # the picture elsewhere

Each of the model options' activations (`model.activation=`: relu, sigmoid, tanh, leaky_relu,
gelu, identity) drawn on [−4, 4] with its derivative, the derivative taken by autograd and
checked against its formula. What to look for: sigmoid's and tanh's derivatives vanish away
from 0 (a deep stack of them multiplies small numbers: vanishing gradients), ReLU's is 0 or 1
(no vanishing for positive inputs, none at all for negative ones: "dead" units), leaky ReLU
keeps a small slope there, GELU is a smooth ReLU, and identity makes the MLP a linear model.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch

from dlcourse.course.differentiation import save_figure
from dlcourse.models.mlp import ACTIVATIONS, make_activation


def gelu_derivative(x: torch.Tensor) -> torch.Tensor:
    """d/dx x·Φ(x) = Φ(x) + x·φ(x), Φ and φ the standard normal's distribution and density."""
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-(x**2) / 2) / math.sqrt(
        2 * math.pi
    )


# Each activation's derivative by its formula; the functions are the MLP's own modules
# (models/mlp.py: `model.activation=`).
DERIVATIVES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": lambda x: (x > 0).to(x.dtype),
    "sigmoid": lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x)),
    "tanh": lambda x: 1 - torch.tanh(x) ** 2,
    "leaky_relu": lambda x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, 0.01)),
    "gelu": gelu_derivative,
    "identity": torch.ones_like,
}


def curves(low: float = -4.0, high: float = 4.0, count: int = 401) -> dict[str, dict]:
    """Each activation's values and autograd's derivative on a grid, and the largest gap
    between autograd's derivative and the formula's (kinks at 0 excluded: there autograd
    picks one of the two one-sided slopes)."""
    x = torch.linspace(low, high, count, dtype=torch.float64)
    result = {}
    for name in ACTIVATIONS:
        function, formula = make_activation(name), DERIVATIVES[name]
        leaf = x.clone().requires_grad_(True)
        values = function(leaf)
        (derivative,) = torch.autograd.grad(values.sum(), leaf)
        smooth = x != 0
        gap = (derivative - formula(x))[smooth].abs().max().item()
        result[name] = {"x": x, "value": values.detach(), "derivative": derivative, "gap": gap}
    return result


def plot(drawn: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no display needed
    from matplotlib import pyplot

    figure, grid = pyplot.subplots(2, 3, figsize=(10.5, 6.4), dpi=100, sharex=True)
    for axes, (name, curve) in zip(grid.flat, drawn.items()):
        axes.plot(curve["x"], curve["value"], label=name)
        axes.plot(curve["x"], curve["derivative"], "--", label="its derivative")
        axes.axhline(0, color="grey", linewidth=0.5)
        axes.axvline(0, color="grey", linewidth=0.5)
        axes.set_title(name)
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
    figure.suptitle("Activation functions (solid) and their derivatives (dashed)")
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("activations.png"))
    out = parser.parse_args(argv).out
    drawn = curves()
    points = (-2.0, 0.0, 2.0)
    header = "".join(f"  f({p:+.0f})  f'({p:+.0f})" for p in points)
    print(f"{'activation':<11}{header}  |autograd − formula|")
    for name in ACTIVATIONS:
        at = torch.tensor(points, dtype=torch.float64)
        values, derivatives = make_activation(name)(at), DERIVATIVES[name](at)
        cells = "".join(f"{v:7.3f} {d:7.3f}" for v, d in zip(values, derivatives))
        print(f"{name:<11}{cells}  {drawn[name]['gap']:.1e}")
    plot(drawn, out)
    print(f"the curves: {out}")


if __name__ == "__main__":
    main()
