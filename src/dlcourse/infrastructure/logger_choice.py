"""The loggers a run gets: what the `logger` config group chose (configs/logger/), by name, as one.

dlcourse-train logger=[tensorboard,csv,mlflow]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from dlcourse.infrastructure.csv_logger import CSVLogger
from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.files import Picture
from dlcourse.infrastructure.loggers import HParamValue, Logger, TensorBoardLogger


class AllLoggers:
    """Several loggers as one (logger=[tensorboard,csv]): each call goes to each, in order."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_scalars(metrics, step)

    def log_image(self, tag: str, image: torch.Tensor | Picture, step: int) -> None:
        for logger in self.loggers:
            logger.log_image(tag, image, step)

    def log_histograms(self, model: nn.Module, step: int) -> None:
        for logger in self.loggers:
            logger.log_histograms(model, step)

    def log_hparams(
        self, hparams: Mapping[str, HParamValue], metrics: Mapping[str, float], step: int
    ) -> None:
        for logger in self.loggers:
            logger.log_hparams(hparams, metrics, step)

    def log_train_and_val(self, names: Iterable[str]) -> None:
        for logger in self.loggers:
            logger.log_train_and_val(names)

    def log_files(self, folder: Path) -> None:
        for logger in self.loggers:
            logger.log_files(folder)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


LOGGERS = ("tensorboard", "csv", "mlflow")  # the configs of configs/logger/, by name


def build_loggers(
    chosen: Mapping[str, Mapping] | None, log_dir: Path, output_root: Path, purge_step: int | None
) -> Logger:
    """The loggers a run's config chose (`logger:`; a config from before the group: TensorBoard),
    writing into `log_dir`. `purge_step`: a resumed run's, from its checkpoint's step on."""
    chosen = {"tensorboard": {}} if chosen is None else chosen
    if not isinstance(chosen, Mapping) or not all(
        isinstance(settings, Mapping | None) for settings in chosen.values()
    ):
        raise UserError(
            f"logger: {chosen!r} is not a choice of loggers; e.g. logger=[tensorboard,csv]"
        )
    loggers: list[Logger] = []
    for name, settings in chosen.items():
        settings = settings or {}
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(log_dir, purge_step))
        elif name == "csv":
            loggers.append(CSVLogger(log_dir, purge_step))
        elif name == "mlflow":  # imported only when chosen: MLflow is an extra
            from dlcourse.infrastructure.mlflow_logger import MLflowLogger

            uri, experiment = settings.get("tracking_uri"), settings.get("experiment_name")
            loggers.append(MLflowLogger(log_dir, uri, str(experiment or "dlcourse"), output_root))
        else:
            raise UserError(
                f"logger: no logger named {name!r}; choose from {', '.join(LOGGERS)} (several: "
                f"logger=[tensorboard,csv])"
            )
    return loggers[0] if len(loggers) == 1 else AllLoggers(loggers)
