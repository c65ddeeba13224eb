"""Numerical vs symbolic vs automatic differentiation, on the lecture's sigmoid neuron.

    python -m dlcourse.course.differentiation                       # table, and differentiation.png
    python -m dlcourse.course.differentiation --out outputs/v.png   # the picture elsewhere

The same derivative ∂f/∂w₁ of f = 1 / (1 + e^−(w₀ + w₁x₁ + w₂x₂)) three ways:
- symbolic: sympy differentiates the expression and prints the formula;
- automatic: autograd (float64) from one forward and one backward pass;
- numerical: forward differences (f(w+h) − f(w)) / h, as the lecture writes them, and central
  differences (f(w+h) − f(w−h)) / 2h, for steps h from 10⁻¹ down to 10⁻¹⁶.
The numerical error against step size is a V: for large steps the truncation error (∝ h for
forward, ∝ h² for central differences) dominates and shrinks with h; for small steps float64
rounding, about ε·|f| / h with ε = 2.2e-16, dominates and grows as h shrinks. The best
forward steps are near √ε ≈ 1e-8 (errors ≈ 1e-9), the best central ones near ∛ε ≈ 6e-6
(errors ≈ 1e-12): too small a step is as wrong as too large a one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import sympy
import torch

from dlcourse.infrastructure.files import open_new

POINT = {"w0": -3.0, "w1": 2.0, "x1": -1.0, "w2": -3.0, "x2": -2.0}  # as dlcourse.course.autograd
STEPS = [10.0 ** (-k / 2) for k in range(2, 33)]  # 10⁻¹ … 10⁻¹⁶, two per decade


def neuron(w0: float, w1: float, x1: float, w2: float, x2: float) -> float:
    """f in plain float64 arithmetic, the way a finite-difference check evaluates it."""
    return float(torch.sigmoid(torch.tensor(w0 + w1 * x1 + w2 * x2, dtype=torch.float64)))


def symbolic_derivative(name: str = "w1") -> tuple[sympy.Expr, float]:
    """sympy's formula for ∂f/∂`name`, and its value at POINT (exact, then rounded to float)."""
    symbols = sympy.symbols(list(POINT))
    w0, w1, x1, w2, x2 = symbols
    f = 1 / (1 + sympy.exp(-(w0 + w1 * x1 + w2 * x2)))
    derivative = sympy.diff(f, dict(zip(POINT, symbols))[name])
    return derivative, float(derivative.subs(dict(zip(symbols, POINT.values()))).evalf(30))


def autograd_derivative(name: str = "w1") -> float:
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in POINT.items()}
    w0, w1, x1, w2, x2 = leaves.values()
    torch.sigmoid(w0 + w1 * x1 + w2 * x2).backward()
    return leaves[name].grad.item()


def finite_differences(name: str = "w1") -> list[tuple[float, float, float]]:
    """(h, forward difference, central difference) for every step in STEPS."""
    rows = []
    for h in STEPS:
        plus, minus = dict(POINT), dict(POINT)
        plus[name] += h
        minus[name] -= h
        forward = (neuron(**plus) - neuron(**POINT)) / h
        central = (neuron(**plus) - neuron(**minus)) / (2 * h)
        rows.append((h, forward, central))
    return rows


def error_curves(name: str = "w1") -> dict[str, list[float]]:
    """|numerical − exact| per step, for both formulas (the exact value from sympy)."""
    _, exact = symbolic_derivative(name)
    rows = finite_differences(name)
    return {
        "step": [h for h, _, _ in rows],
        "forward": [abs(forward - exact) for _, forward, _ in rows],
        "central": [abs(central - exact) for _, _, central in rows],
    }


def plot(curves: dict[str, list[float]], path: Path) -> None:
    """The V-shaped curves on log-log axes, with each formula's best step marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no display needed
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6.4, 4.4), dpi=100)
    tiny = 1e-20  # an error of exactly 0 has no place on a log axis
    for name, style in (("forward", "o-"), ("central", "s-")):
        errors = [max(e, tiny) for e in curves[name]]
        best = min(range(len(errors)), key=errors.__getitem__)
        label = f"{name} differences (best h = {curves['step'][best]:.0e})"
        axes.loglog(curves["step"], errors, style, label=label)
    axes.set_xlabel("step h")
    axes.set_ylabel("|numerical − exact| of ∂f/∂w₁")
    axes.set_title("Truncation error (large h) vs float64 rounding (small h)")
    axes.invert_xaxis()  # steps shrink from left to right, as one tries smaller and smaller h
    axes.grid(True, which="major", alpha=0.3)
    axes.legend()
    save_figure(figure, path)


def save_figure(figure: Any, path: Path) -> None:
    """A matplotlib figure into `path` (its suffix picks the format, PNG by default), freed."""
    from matplotlib import pyplot

    figure.tight_layout()
    with open_new(path) as file:
        figure.savefig(file, format=Path(path).suffix.lstrip(".") or "png")
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("differentiation.png"))
    out = parser.parse_args(argv).out
    formula, exact = symbolic_derivative()
    automatic = autograd_derivative()
    print("f = 1 / (1 + exp(−(w0 + w1·x1 + w2·x2))) at w0=−3, w1=2, x1=−1, w2=−3, x2=−2")
    print(f"symbolic   ∂f/∂w1 = {formula}  =  {exact:.17g}")
    gap = abs(automatic - exact)
    print(f"automatic  ∂f/∂w1 = {automatic:.17g}  (|autograd − symbolic| = {gap:.1e})")
    print(f"numerical, error against the symbolic value:\n{'h':>8} {'forward':>10} {'central':>10}")
    curves = error_curves()
    for h, forward, central in zip(curves["step"], curves["forward"], curves["central"]):
        print(f"{h:8.0e} {forward:10.1e} {central:10.1e}")
    plot(curves, out)
    print(f"error against step size: {out}")


if __name__ == "__main__":
    main()
