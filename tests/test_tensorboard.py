"""What a user sees in TensorBoard, asked of a real TensorBoard server over its HTTP API: run names
that say what ran, HParams with the swept settings and each task's metrics (in a folder that
mixes classification and inpainting runs too), and the scalar curves."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest
from helpers import BIN, compose_config, quick_overrides, run_command

from dlcourse.infrastructure.loggers import TRAIN_AND_VAL
from dlcourse.run import train


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def tensorboard(tiny_mnist, tmp_path_factory):
    """TensorBoard on a folder with a two-job sweep and an inpainting run beside it."""
    root = tmp_path_factory.mktemp("tensorboard")
    sweep = [
        "dlcourse-train",
        "-m",
        "model=linear,mlp",
        "hydra.sweep.dir=logs/sweep",
        *quick_overrides(tiny_mnist),
    ]
    assert run_command(sweep, root, tiny_mnist).returncode == 0
    inpainting = [
        "experiment=mlp_inpainting",
        "model.hidden_sizes=[32]",
        *quick_overrides(tiny_mnist),
    ]
    train(compose_config(inpainting), root / "logs" / "inpainting")
    port = free_port()
    command = [
        str(BIN / "tensorboard"),
        "--logdir",
        str(root / "logs"),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if len(get(f"{url}/data/runs")) == 6:  # every run read, and its hparams sub-run
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"TensorBoard did not serve the runs: {server.communicate()[1][-2000:]}")
    yield url
    server.kill()
    server.wait()


def test_run_names_say_what_ran(tensorboard):
    assert sorted(get(f"{tensorboard}/data/runs")) == [
        "inpainting",
        "inpainting/hparams",
        "sweep/0_model=linear",
        "sweep/0_model=linear/hparams",
        "sweep/1_model=mlp",
        "sweep/1_model=mlp/hparams",
    ]


def test_hparams_show_the_swept_choice_and_every_tasks_metrics(tensorboard):
    experiment = get(f"{tensorboard}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    metrics = [info["name"]["tag"] for info in experiment["metricInfos"]]
    assert "model" in hparams  # the swept group choice, with its values linear / mlp
    # Each task's few metrics, its monitored one first (not every curve: 44 columns).
    assert metrics == [
        "best/val/acc",
        "best/val/mse_hole",
        "test/acc",
        "test/loss",
        "test/mse_hole",
        "train/loss",
    ]
    model = next(info for info in experiment["hparamInfos"] if info["name"] == "model")
    assert {"linear", "mlp"} <= set(model["domainDiscrete"])
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS"]
    request = {"experimentName": "", "allowedStatuses": statuses, "startIndex": 0, "sliceSize": 10}
    groups = get(f"{tensorboard}/data/plugin/hparams/session_groups", request)["sessionGroups"]
    assert len(groups) == 3


def test_scalars_are_there_with_the_epoch_mean_loss(tensorboard):
    tags = get(f"{tensorboard}/data/plugin/scalars/tags")
    assert {"train/loss", "val/acc", "test/acc"} <= set(tags["sweep/1_model=mlp"])
    assert "best/val/acc" in tags["sweep/1_model=mlp/hparams"]
    points = get(
        f"{tensorboard}/data/plugin/scalars/scalars?run=sweep/1_model%3Dmlp&tag=train/loss"
    )
    assert [point[1] for point in points] == [8, 16]  # one point per epoch, at its last step
    assert {"baselines/test/meanfill/mse_hole", "test/mse_hole"} <= set(tags["inpainting"])


def test_custom_scalars_chart_train_and_val_of_each_metric_together(tensorboard):
    """Did it overfit? One chart per metric, train and val together, for every run: the runs'
    layouts merged, classification's loss and acc beside inpainting's mse_hole."""
    layout = get(f"{tensorboard}/data/plugin/custom_scalars/layout")
    [category] = [c for c in layout["category"] if c["title"] == TRAIN_AND_VAL]
    assert layout["category"][0] == category  # the first thing Custom Scalars shows
    charts = {chart["title"]: chart["multiline"]["tag"] for chart in category["chart"]}
    assert set(charts) == {"loss", "acc", "mse_hole"}
    assert charts["acc"] == ["^train/acc$", "^val/acc$"]
