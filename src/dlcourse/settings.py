"""The `trainer:` config group as a typed dataclass (configs/trainer/default.yaml sets each field)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEVICES = r"auto|cpu|cuda|cuda:\d+|mps"  # the values of trainer.device (a regular expression)


@dataclass
class TrainerSettings:
    epochs: int = 5
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # 32 may arrive as a number from the command line (trainer.precision=32).
    precision: Literal["32", "bf16", "16-mixed", 32] = "32"
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    log_every_n_steps: int = 50
    histogram_every_n_steps: int | None = None  # weight / gradient histograms; None: at each evaluation; 0: never
    eval_every_n_epochs: int = 1
    test_curve: bool = False  # also measure the test split at every evaluation (test_curve/acc, ...)
    progress_bar: bool | None = None  # None: only when stderr is a terminal
    on_nonfinite: Literal["stop", "skip"] = "stop"  # what a nan / inf loss does
    deterministic: bool = False  # deterministic algorithms (slower on GPUs)
    num_threads: int | None = None  # CPU threads for torch; None: torch's default (all cores)
    channels_last: bool = False  # NHWC memory layout for image models (faster convolutions on GPUs)
    compile: bool = False  # torch.compile the model (slow to start; pays off on long GPU runs)
