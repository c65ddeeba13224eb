"""The lecture demos: backpropagation by hand, numerical vs symbolic vs automatic
differentiation, classical template matching."""
