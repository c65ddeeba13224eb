"""The `logger` group (configs/logger/): TensorBoard (the default), metrics.csv, MLflow, and several
at once. Each is read back with its own tool's reader: pandas, MLflow's client, TensorBoard's
event reader."""

from __future__ import annotations

import json

import pytest
from helpers import (
    STEPS_PER_EPOCH,
    compose_config,
    only_run_folder,
    quick_overrides,
    read_events,
    run_command,
)

from dlcourse.infrastructure.csv_logger import CSVLogger
from dlcourse.infrastructure.run_folder import METRICS_CSV, MLFLOW_RUN
from dlcourse.run import train

pandas = pytest.importorskip("pandas", reason="the dev extra has it: pip install -e '.[dev]'")


def test_the_default_is_tensorboard_alone(tiny_mnist, tmp_path):
    train(compose_config(["model=linear", *quick_overrides(tiny_mnist)]), tmp_path)
    assert list(tmp_path.glob("events.out.tfevents.*")) and not (tmp_path / METRICS_CSV).exists()
    assert not (tmp_path / MLFLOW_RUN).exists()


def test_csv_and_tensorboard_together_hold_the_same_curves(tiny_mnist, tmp_path):
    overrides = ["model=linear", "logger=[tensorboard,csv]", *quick_overrides(tiny_mnist)]
    metrics = train(compose_config(overrides), tmp_path)
    table = pandas.read_csv(tmp_path / METRICS_CSV)
    assert table.columns[0] == "step"
    epochs = table.dropna(subset=["train/loss"])
    assert list(epochs["step"]) == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]  # a row per epoch
    assert epochs["train/loss"].iloc[-1] == pytest.approx(metrics["train/loss"])
    assert epochs["val/acc"].iloc[-1] == pytest.approx(metrics["val/acc"])  # one row per step
    assert table["test/acc"].dropna().iloc[-1] == pytest.approx(metrics["test/acc"])
    curve = read_events(tmp_path / "train").Scalars("curves/loss")
    assert [point.value for point in curve] == pytest.approx(list(epochs["train/loss"]))


def test_a_resumed_csv_keeps_the_rows_before_its_checkpoint(tmp_path):
    first = CSVLogger(tmp_path)
    for step in (1, 2, 3, 4):
        first.log_scalars({"train/loss": 1 / step}, step)
    first.log_scalars({"val/loss": 0.5}, 4)  # the same step: the same row
    first.close()  # a stopped run closes its loggers
    assert list(pandas.read_csv(tmp_path / METRICS_CSV)["step"]) == [1, 2, 3, 4]
    resumed = CSVLogger(tmp_path, purge_step=3)  # its checkpoint was at step 2
    resumed.log_scalars({"train/loss": 0.3}, 3)
    resumed.close()
    table = pandas.read_csv(tmp_path / METRICS_CSV)
    assert list(table["step"]) == [1, 2, 3]
    assert list(table["train/loss"]) == pytest.approx([1.0, 0.5, 0.3])
    assert "val/loss" not in table.columns


def test_mlflow_records_params_metrics_per_step_and_the_run_folders_files(tiny_mnist, tmp_path):
    pytest.importorskip("mlflow", reason='logger=mlflow needs pip install -e ".[mlflow]"')
    from mlflow.tracking import MlflowClient

    outputs = tmp_path / "outputs"
    command = [
        "dlcourse-train",
        "model=linear",
        "logger=[tensorboard,mlflow]",
        "optimizer.lr=0.05",
        *quick_overrides(tiny_mnist),
    ]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_folder(outputs / "runs")
    assert "logger" not in run_dir.name  # where it is logged is not what ran
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The default store: one SQLite file for every run, beside the runs.
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    run_id = json.loads((run_dir / MLFLOW_RUN).read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.05" and run.data.params["model"] == "linear"
    history = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert history[-1].value == pytest.approx(metrics["train/loss"])
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    artifacts = {artifact.path for artifact in client.list_artifacts(run_id)}
    assert {"model.safetensors", "confusion_matrix.png", "curves.png"} <= artifacts
    assert (outputs / "mlartifacts").is_dir()  # beside the store, not in the working folder
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()


def test_an_unknown_logger_is_one_line(tiny_mnist, tmp_path):
    command = ["dlcourse-train", "logger=wandb", *quick_overrides(tiny_mnist)]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "logger" in result.stderr and "tensorboard" in result.stderr, result.stderr


def test_histograms_count_every_value_into_equal_bins_as_numpy_does(tmp_path):
    import numpy as np
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlcourse.infrastructure.loggers import HISTOGRAM_BINS, TensorBoardLogger, histogram

    values = torch.randn(10_000) * 3 + 1
    summary = histogram(values)
    counts, edges = np.histogram(values.numpy(), bins=HISTOGRAM_BINS)
    assert summary["bucket_counts"] == pytest.approx(counts.tolist(), abs=1)  # edge rounding
    assert summary["bucket_limits"] == pytest.approx(edges[1:].tolist(), rel=1e-5)
    assert summary["num"] == 10_000 and sum(summary["bucket_counts"]) == 10_000
    assert summary["sum"] == pytest.approx(values.double().sum().item())
    assert summary["min"] == values.min().item() and summary["max"] == values.max().item()
    same = histogram(torch.full((5,), 2.0))  # one value: one bin around it holds them all
    assert max(same["bucket_counts"]) == 5 and same["min"] < 2.0 < same["max"]
    huge = histogram(torch.tensor([1e38, -1e38, 0.0]))  # squares beyond float32, not inf
    assert huge["sum_squares"] == pytest.approx(2e76)
    logger = TensorBoardLogger(tmp_path)
    layer = torch.nn.Linear(3, 2)
    logger.log_histograms(layer, 7)
    logger.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    events.Reload()
    written = events.Histograms("weights/layer1_Linear/weight")[0]
    assert written.step == 7 and written.histogram_value.num == 6


def test_a_picture_is_encoded_once_and_reads_back_as_drawn(tmp_path):
    import io

    import torch
    from PIL import Image

    from dlcourse.infrastructure.files import Picture
    from dlcourse.infrastructure.run_files import RunFiles

    image = torch.rand(3, 20, 30)
    picture = Picture(image)
    assert picture.png is picture.png  # encoded once, shared by TensorBoard and the file
    RunFiles(tmp_path).save_image("drawn", picture)
    assert (tmp_path / "drawn.png").read_bytes() == picture.png
    pixels = torch.tensor(list(Image.open(io.BytesIO(picture.png)).getdata())).T.reshape(3, 20, 30)
    assert torch.equal(pixels, (image * 255).round().to(torch.int64))
