"""Backpropagation by hand: small `torch.autograd.Function`s written the way the lecture does.

    python -m dlcourse.course.autograd   # the two worked examples: forward values, backward factors

Each Function saves in `forward` what its local gradients need, and in `backward` multiplies the
upstream gradient by each local gradient (the chain rule, one node at a time). Tests check them
with `torch.autograd.gradcheck` and the worked examples against the lecture's numbers.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import FunctionCtx


class Multiply(torch.autograd.Function):
    """z = a · b. Local gradients: ∂z/∂a = b, ∂z/∂b = a, so both inputs are kept."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx: FunctionCtx, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = ctx.saved_tensors
        return upstream * b, upstream * a


class ReLU(torch.autograd.Function):
    """z = max(0, x). Local gradient: 1 where x > 0, else 0 (the gate is open or shut)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: FunctionCtx, upstream: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return upstream * (x > 0).to(upstream.dtype)


class Linear(torch.autograd.Function):
    """Y = X Wᵀ + b for a batch X (B, in) and W (out, in).

    ∂L/∂X = ∂L/∂Y · W,  ∂L/∂W = (∂L/∂Y)ᵀ · X,  ∂L/∂b = Σ over the batch of ∂L/∂Y.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias  # (B, out)

    @staticmethod
    def backward(
        ctx: FunctionCtx, upstream: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        return upstream @ weight, upstream.T @ x, upstream.sum(dim=0)


def scalar(value: float) -> torch.Tensor:
    return torch.tensor(float(value), dtype=torch.float64, requires_grad=True)


def relu_network(
    x: float = 5.0, w1: float = 1.0, w2: float = 2.0, y: float = 2.0
) -> dict[str, float]:
    """f = w₁·x, g = relu(f), ŷ = w₂·g, L = ½(ŷ − y)²: forward values, backward factors by hand,
    and autograd's gradients through the Functions above (which must agree)."""
    w1_t, w2_t, x_t = scalar(w1), scalar(w2), scalar(x)
    f = Multiply.apply(w1_t, x_t)
    g = ReLU.apply(f)
    y_hat = Multiply.apply(w2_t, g)
    loss = 0.5 * (y_hat - y) ** 2
    loss.backward()
    # The chain rule, node by node, from the values the forward pass stored.
    dL_dyhat = y_hat.item() - y  # ∂L/∂ŷ = ŷ − y
    dL_dg = dL_dyhat * w2  # ∂ŷ/∂g = w₂
    dL_df = dL_dg * (1.0 if f.item() > 0 else 0.0)  # ∂g/∂f = 1[f > 0]
    return {
        "f": f.item(),
        "g": g.item(),
        "y_hat": y_hat.item(),
        "L": loss.item(),
        "dL/dy_hat": dL_dyhat,
        "dL/dg": dL_dg,
        "dL/df": dL_df,
        "dL/dw1": dL_df * x,  # ∂f/∂w₁ = x
        "dL/dw2": dL_dyhat * g.item(),  # ∂ŷ/∂w₂ = g
        "autograd dL/dw1": w1_t.grad.item(),
        "autograd dL/dw2": w2_t.grad.item(),
    }


def sigmoid_neuron(
    w0: float = -3.0, w1: float = 2.0, x1: float = -1.0, w2: float = -3.0, x2: float = -2.0
) -> dict[str, float]:
    """f = 1 / (1 + e^−(w₀ + w₁x₁ + w₂x₂)), one elementary stage at a time (the lecture's
    circuit)."""
    s = w0 + w1 * x1 + w2 * x2  # the weighted sum
    negated = -s
    exp = math.exp(negated)
    denominator = 1.0 + exp
    f = 1.0 / denominator
    # Backward, stage by stage: upstream gradient × local gradient.
    df_ddenominator = -1.0 / denominator**2  # ∂(1/u)/∂u = −1/u²
    df_dexp = df_ddenominator * 1.0  # ∂(1 + e)/∂e = 1
    df_dnegated = df_dexp * exp  # ∂e^v/∂v = e^v
    df_ds = df_dnegated * -1.0  # ∂(−s)/∂s = −1; equals f(1 − f), the sigmoid's own derivative
    values = {
        "w0+w1x1+w2x2": s,
        "-s": negated,
        "exp": exp,
        "1+exp": denominator,
        "f": f,
        "df/d(1+exp)": df_ddenominator,
        "df/dexp": df_dexp,
        "df/d(-s)": df_dnegated,
        "df/ds": df_ds,
        "df/dw0": df_ds,
        "df/dw1": df_ds * x1,
        "df/dx1": df_ds * w1,
        "df/dw2": df_ds * x2,
        "df/dx2": df_ds * w2,
    }
    return values | sigmoid_neuron_by_autograd(w0=w0, w1=w1, x1=x1, w2=w2, x2=x2)


def sigmoid_neuron_by_autograd(**inputs: float) -> dict[str, float]:
    """The same gradients from autograd, through the Multiply Function above."""
    leaves = {name: scalar(value) for name, value in inputs.items()}
    w0, w1, x1, w2, x2 = leaves.values()
    torch.sigmoid(w0 + Multiply.apply(w1, x1) + Multiply.apply(w2, x2)).backward()
    return {f"autograd df/d{name}": leaf.grad.item() for name, leaf in leaves.items()}


def main() -> None:
    print("ReLU network  f = w1·x, g = relu(f), y_hat = w2·g, L = ½(y_hat − y)²")
    print("  with x=5, w1=1, w2=2, y=2")
    for name, value in relu_network().items():
        print(f"  {name:>18} = {value:g}")
    print("Sigmoid neuron  f = 1 / (1 + exp(−(w0 + w1·x1 + w2·x2)))")
    print("  with w0=−3, w1=2, x1=−1, w2=−3, x2=−2")
    for name, value in sigmoid_neuron().items():
        print(f"  {name:>18} = {value:.4f}")


if __name__ == "__main__":
    main()
