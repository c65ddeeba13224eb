"""Where metrics go: TensorBoard, or nowhere (the no-op twin for tests and non-zero ranks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

HParamValue = int | float | str | bool


class Logger(Protocol):
    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_image(self, tag: str, image: torch.Tensor, step: int) -> None: ...
    def log_histograms(self, model: nn.Module, step: int) -> None: ...
    def log_hparams(
        self, hparams: Mapping[str, HParamValue], metric_names: Iterable[str]
    ) -> None: ...
    def close(self) -> None: ...


class NullLogger:
    """Accepts everything and writes nothing."""

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        pass

    def log_histograms(self, model: nn.Module, step: int) -> None:
        pass

    def log_hparams(self, hparams: Mapping[str, HParamValue], metric_names: Iterable[str]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Event files in `log_dir`: scalars, and the run's hyperparameters for the HParams tab."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        """`purge_step`: when continuing a run, hide its events from this step on (logged after
        the checkpoint it resumes from), so no step appears twice."""
        from torch.utils.tensorboard import (
            SummaryWriter,
        )  # imported here: tensorboard is slow to import

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def log_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """`image`: (3, H, W) with values in [0, 1]."""
        self.writer.add_image(tag, image, step)

    def log_histograms(self, model: nn.Module, step: int) -> None:
        """Each parameter's values and, after a backward pass, its gradient."""
        for name, parameter in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), step)
            if parameter.grad is not None:
                self.writer.add_histogram(f"gradients/{name}", parameter.grad.float().cpu(), step)

    def log_hparams(self, hparams: Mapping[str, HParamValue], metric_names: Iterable[str]) -> None:
        """Register the run's hyperparameters and the names of scalars it already logged.

        `SummaryWriter.add_hparams` would open a separate sub-run; writing the three hparams
        summaries into this run's own file keeps hyperparameters and curves in one run.
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        metric_dict = {name: 0.0 for name in metric_names}  # values are read from the scalars
        file_writer = self.writer._get_file_writer()
        for summary in hparams_summaries(dict(hparams), metric_dict):
            file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()


def flatten_hparams(config: Mapping, prefix: str = "") -> dict[str, HParamValue]:
    """{"optimizer": {"lr": 0.1}} → {"optimizer.lr": 0.1}; lists and None become strings."""
    flat: dict[str, HParamValue] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, prefix=f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
