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
