"""Where metrics go: the Logger interface, TensorBoard (the default) and the no-op twin (for tests
and non-zero ranks). metrics.csv and MLflow: csv_logger.py, mlflow_logger.py; which a run gets
(the `logger` config group): logger_choice.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dlcourse.infrastructure.files import Picture, as_picture

HParamValue = int | float | str | bool


class Logger(Protocol):
    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_image(self, tag: str, image: torch.Tensor | Picture, step: int) -> None: ...
    def log_histograms(self, model: nn.Module, step: int) -> None: ...
    def log_hparams(
        self, hparams: Mapping[str, HParamValue], metrics: Mapping[str, float], step: int
    ) -> None: ...
    def log_train_and_val(self, names: Iterable[str]) -> None: ...
    # The run's finished files (pictures, weights), once they are written: after close.
    def log_files(self, folder: Path) -> None: ...
    def close(self) -> None: ...


class NullLogger:
    """Accepts everything and writes nothing."""

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_image(self, tag: str, image: torch.Tensor | Picture, step: int) -> None:
        pass

    def log_histograms(self, model: nn.Module, step: int) -> None:
        pass

    def log_hparams(
        self, hparams: Mapping[str, HParamValue], metrics: Mapping[str, float], step: int
    ) -> None:
        pass

    def log_train_and_val(self, names: Iterable[str]) -> None:
        pass

    def log_files(self, folder: Path) -> None:
        pass

    def close(self) -> None:
        pass


HISTOGRAM_BINS = 64  # TensorBoard draws about 30 bars of each: twice as many to choose from


def histogram(values: torch.Tensor) -> dict[str, Any] | None:
    """A histogram of finite `values` in equal bins, counted by torch (the numpy path of
    SummaryWriter.add_histogram took 10 ms per 600k values, at every evaluation). On the CPU in
    float64: deterministic everywhere (CUDA's histc is not), and no range overflows. None: no
    values."""
    values = values.detach().flatten().double().cpu()
    if values.numel() == 0:
        return None
    low, high = values.min().item(), values.max().item()
    if high <= low:  # all equal: one bin around the value
        low, high = low - 0.5, high + 0.5
    counts = torch.histc(values, bins=HISTOGRAM_BINS, min=low, max=high)
    edges = torch.linspace(low, high, HISTOGRAM_BINS + 1, dtype=torch.float64)[1:]
    return {
        "min": low,
        "max": high,
        "num": values.numel(),
        "sum": values.sum().item(),
        "sum_squares": values.square().sum().item(),
        "bucket_limits": edges.tolist(),  # each bin's right edge
        "bucket_counts": counts.tolist(),
    }


class TensorBoardLogger:
    """Event files in `log_dir` and its sub-runs, laid out for TensorBoard's first screen (its
    Time Series tab, see `placement`): scalars, pictures, histograms and, in a sub-run of their
    own, the run's hyperparameters for the HParams tab."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        """`purge_step`: when continuing a run, hide its events from this step on (logged after
        the checkpoint it resumes from), so no step appears twice."""
        from torch.utils.tensorboard import (
            SummaryWriter,
        )  # imported here: tensorboard is slow to import

        self.log_dir = Path(log_dir)
        self.purge_step = purge_step
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.sub_runs: dict[str, SummaryWriter] = {"": self.writer}

    def writer_for(self, sub_run: str):
        """The writer of `<run>/<sub_run>` ("": the run itself), opened when first needed."""
        if sub_run not in self.sub_runs:
            from torch.utils.tensorboard import SummaryWriter

            folder = self.log_dir / sub_run
            self.sub_runs[sub_run] = SummaryWriter(str(folder), purge_step=self.purge_step)
        return self.sub_runs[sub_run]

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            sub_run, tag = placement(name)
            self.writer_for(sub_run).add_scalar(tag, value, step)

    def log_image(self, tag: str, image: torch.Tensor | Picture, step: int) -> None:
        """`image`: (3, H, W) with values in [0, 1], or a Picture whose PNG is encoded already
        (SummaryWriter.add_image would encode it again, slower)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        picture = as_picture(image)
        encoded = Summary.Image(height=picture.height, width=picture.width, colorspace=3,
                                encoded_image_string=picture.png)  # fmt: skip
        summary = Summary(value=[Summary.Value(tag=tag, image=encoded)])
        self.writer._get_file_writer().add_summary(summary, step)

    def log_histograms(self, model: nn.Module, step: int) -> None:
        """Each parameter's values and, after a backward pass, its gradient. Non-finite values
        have no histogram (the trainer reports a diverged run itself)."""
        for name, parameter in layer_names(model).items():
            tensors = {"weights": parameter.detach(), "gradients": parameter.grad}
            for kind, tensor in tensors.items():
                if tensor is None or not torch.isfinite(tensor).all():
                    continue
                summary = histogram(tensor)
                if summary is not None:
                    self.writer.add_histogram_raw(f"{kind}/{name}", **summary, global_step=step)

    def log_hparams(
        self, hparams: Mapping[str, HParamValue], metrics: Mapping[str, float], step: int
    ) -> None:
        """The run's hyperparameters and its few final `metrics`, for the HParams tab, in a
        sub-run of their own (`<run>/hparams`).

        TensorBoard makes a metric column of every scalar tag of the run that holds the
        hyperparameters (and of its sub-runs): in the run itself, that is every curve (44
        columns). In their own sub-run, only these: the monitored metric first, as the caller
        names them so. Only the session's summaries are written, not an experiment summary:
        TensorBoard shows the first experiment summary it finds for a whole log folder, which
        would hide every other kind of run in it; without one, it gathers them from all runs.
        """
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        _, session_start, session_end = hparams_summaries(dict(hparams), {})
        with SummaryWriter(log_dir=str(self.log_dir / HPARAMS_RUN)) as writer:
            writer._get_file_writer().add_summary(session_start)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, step)
            writer._get_file_writer().add_summary(session_end)

    def log_files(self, folder: Path) -> None:
        pass  # the pictures are in the event files already

    def log_train_and_val(self, names: Iterable[str]) -> None:
        """Custom Scalars' layout: the `curves/` chart of each metric named (`loss`, `acc`), its
        train and val curves together, for every run in the log folder: did it overfit?
        (TensorBoard merges the runs' layouts, each chart once: classification's and
        inpainting's side by side.)"""
        charts = {name: ["Multiline", [f"^{CURVES}/{name}$"]] for name in names}
        self.writer.add_custom_scalars({TRAIN_AND_VAL: charts})

    def close(self) -> None:
        for writer in self.sub_runs.values():
            writer.close()


def placement(name: str) -> tuple[str, str]:
    """Where TensorBoard shows a metric: (its sub-run, its tag).

    TensorBoard opens on its Time Series tab, which draws one chart per tag, a line per run, and
    orders its groups of charts by the tag's first word. So the model's curves go to sub-runs
    `train` and `val` (and `test`, with trainer.test_curve) under one tag, `curves/<metric>`:
    the first group on the screen, train and val of a metric in one chart (the layout Keras
    users know as `train` / `validation`). A baseline goes to its own sub-run under the model's
    tag, so it is a line in the same chart (`baseline_meanfill`: `curves/mse_hole` at each
    evaluation, `test/mse_hole` at the end). Everything else stays in the run, named as logged
    (`test/acc`, `time/epoch_seconds`, `steps/lr`).
    """
    split, _, metric = name.partition("/")
    if split in CURVE_RUNS and metric:
        return CURVE_RUNS[split], f"{CURVES}/{metric}"
    if split == "baselines" and metric.count("/") == 2:
        baseline_split, baseline, metric = metric.split("/")
        tag = f"{CURVES}/{metric}" if baseline_split == "val" else f"{baseline_split}/{metric}"
        return f"baseline_{baseline}", tag
    return "", name


def layer_names(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters named by layer, counting only layers that have parameters, in the order they
    were built: `layer1_Conv2d/weight`, `layer2_BatchNorm2d/bias`, ... A layer keeps its name
    when a dropout or activation is added before it (`hidden.3.weight` would become
    `hidden.4.weight`)."""
    names: dict[str, nn.Parameter] = {}
    layers = [module for module in model.modules() if list(module.parameters(recurse=False))]
    for number, module in enumerate(layers, start=1):
        for name, parameter in module.named_parameters(recurse=False):
            names[f"layer{number}_{type(module).__name__}/{name}"] = parameter
    return names


CURVES = "curves"  # the tags' first word of the model's curves: first in Time Series' order
CURVE_RUNS = {"train": "train", "val": "val", "test_curve": "test"}  # split → its sub-run
TRAIN_AND_VAL = "Train and validation: one chart per metric"  # Custom Scalars' first category
HPARAMS_RUN = "hparams"  # the sub-run of a run's hyperparameters and final metrics (HParams tab)

# Settings every run shows in the HParams tab, besides what its command line chose.
CORE_SETTINGS = ("optimizer.lr", "dataset.batch_size", "trainer.epochs", "seed")


def run_hparams(
    config: Mapping, choices: Mapping[str, str] | None = None, keys: Iterable[str] = CORE_SETTINGS
) -> dict[str, HParamValue]:
    """What the HParams tab shows for a run: its config groups' choices (`model`: `mlp`) and
    the settings in `keys` (the command line's and the core ones; in a sweep, the ones it
    varies), with their values in the resolved config. Settings nobody chose stay out of view."""
    flat = flatten_hparams(config)
    hparams: dict[str, HParamValue] = {
        group: str(choice) for group, choice in (choices or {}).items()
    }
    hparams |= {key: flat[key] for key in keys if key in flat}
    return hparams


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
