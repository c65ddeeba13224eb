"""What a user sees in TensorBoard, asked of a real TensorBoard server over its HTTP API and shown
by a real browser: run names that say what ran, the curves first (train and val of a metric in
one chart), HParams with the swept settings and each task's metrics (in a folder that mixes
classification and inpainting runs too)."""

from __future__ import annotations

import html
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import BIN, compose_config, quick_overrides, run_command

from dlcourse.infrastructure.loggers import CURVES, HPARAMS_RUN, TRAIN_AND_VAL
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
            if len(get(f"{url}/data/runs")) == len(RUNS):  # every run and sub-run read
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


# A sweep's jobs and an inpainting run, each with its curves' sub-runs (train, val), its
# baselines' (inpainting) and its hyperparameters' (see loggers.placement).
RUNS = [
    "inpainting",
    "inpainting/baseline_meanfill",
    "inpainting/baseline_unfilled",
    f"inpainting/{HPARAMS_RUN}",
    "inpainting/train",
    "inpainting/val",
    *(f"sweep/{job}{sub_run}" for job in ("0_model=linear", "1_model=mlp")
      for sub_run in ("", f"/{HPARAMS_RUN}", "/train", "/val")),
]  # fmt: skip


def test_run_names_say_what_ran(tensorboard):
    assert sorted(get(f"{tensorboard}/data/runs")) == RUNS


def test_hparams_show_the_swept_choice_and_every_tasks_metrics(tensorboard):
    experiment = get(f"{tensorboard}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    metrics = [info["name"]["tag"] for info in experiment["metricInfos"]]
    assert "model" in hparams  # the swept group choice, with its values linear / mlp
    # Each task's few metrics, its monitored one first (not every curve: 44 columns).
    assert metrics == [
        "results/best/val/acc",
        "results/best/val/mse_hole",
        "results/last/train/loss",
        "results/test/acc",
        "results/test/loss",
        "results/test/mse_hole",
    ]
    model = next(info for info in experiment["hparamInfos"] if info["name"] == "model")
    assert {"linear", "mlp"} <= set(model["domainDiscrete"])
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS"]
    request = {"experimentName": "", "allowedStatuses": statuses, "startIndex": 0, "sliceSize": 10}
    groups = get(f"{tensorboard}/data/plugin/hparams/session_groups", request)["sessionGroups"]
    assert len(groups) == 3


def test_curves_share_a_tag_across_train_val_and_baseline_sub_runs(tensorboard):
    tags = get(f"{tensorboard}/data/plugin/scalars/tags")
    job = "sweep/1_model=mlp"
    assert {"curves/loss", "curves/acc"} <= set(tags[f"{job}/train"]) & set(tags[f"{job}/val"])
    assert {"test/acc", "test/loss", "steps/loss", "steps/lr"} <= set(tags[job])
    assert "results/best/val/acc" in tags[f"{job}/{HPARAMS_RUN}"]
    points = get(f"{tensorboard}/data/plugin/scalars/scalars?run={job}/train&tag=curves/loss")
    assert [point[1] for point in points] == [8, 16]  # one point per epoch, at its last step
    # A baseline is a line in the model's chart, and a point beside its test value.
    assert {"curves/mse_hole", "test/mse_hole"} <= set(tags["inpainting/baseline_meanfill"])
    assert "test/mse_hole" in tags["inpainting"] and "curves/mse_hole" in tags["inpainting/val"]


def test_custom_scalars_chart_train_and_val_of_each_metric_together(tensorboard):
    """Did it overfit? One chart per metric, train and val together, for every run: the runs'
    layouts merged, classification's loss and acc beside inpainting's mse_hole."""
    layout = get(f"{tensorboard}/data/plugin/custom_scalars/layout")
    [category] = [c for c in layout["category"] if c["title"] == TRAIN_AND_VAL]
    assert layout["category"][0] == category  # the first thing Custom Scalars shows
    charts = {chart["title"]: chart["multiline"]["tag"] for chart in category["chart"]}
    assert set(charts) == {"loss", "acc", "mse_hole"}
    assert charts["acc"] == [f"^{CURVES}/acc$"]  # the train and val sub-runs' curves


# What a person sees: the pages as Debian's headless Chromium renders them (issue #26). .ci/run
# installs chromium and poppler-utils; elsewhere these tests skip, saying what to install.
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    BROWSER is None or shutil.which("pdftotext") is None,
    reason="needs a browser: apt-get install chromium poppler-utils (.ci/run installs them)",
)


def rendered(url: str, folder: Path) -> str:
    """The page's text once its scripts have settled (15 s of the page's own time). The Time
    Series view is plain DOM (`--dump-dom`); Custom Scalars and HParams draw inside shadow
    roots, which a DOM dump leaves out, so those are printed to PDF and read back as text."""
    browser = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    browser += ["--virtual-time-budget=15000", f"--user-data-dir={folder / 'profile'}"]
    if "#" not in url:
        done = subprocess.run([*browser, "--dump-dom", url], capture_output=True, timeout=120)
        page = re.sub(r"<(script|style)\b.*?</\1>", " ", done.stdout.decode(), flags=re.S)
        return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))
    pdf = folder / "page.pdf"
    subprocess.run([*browser, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True)
    return re.sub(r"\s+", " ", text.stdout)


@needs_browser
def test_the_browser_opens_on_the_train_and_val_curves(tensorboard, tmp_path):
    text = rendered(tensorboard, tmp_path)  # TensorBoard's default view (Time Series)
    for run in RUNS:  # the run list, named by what ran
        assert f" {run} " in text, text[:3000]
    # Its groups of charts, in the order shown: the curves first, the only one open.
    groups = re.findall(r" ([a-z_]+) (\d+) cards(?= )", text)
    assert groups[0] == (CURVES, "6"), groups  # acc, loss, inpainting's mse, mse_hole, psnr...
    assert {"gradients", "pictures", "results", "test", "weights"} <= {g for g, _ in groups}
    # The first chart: acc, a line for each run's train and each run's val (and its values).
    first_chart = text[text.index(f" {CURVES} /acc ") : text.index(f" {CURVES} /loss ")]
    for job in ("sweep/0_model=linear", "sweep/1_model=mlp"):
        for sub_run in ("train", "val"):  # its smoothed and last values at the last step
            assert re.search(rf" {job}/{sub_run} \S+ \S+ 16 ", first_chart), first_chart
    # The other groups are closed: their headers follow each other with no chart between.
    others = "".join(f" {group} {count} cards" for group, count in groups[1:])
    assert others in text, text[:3000]


@needs_browser
def test_the_browser_shows_train_and_val_of_each_metric_in_one_chart(tensorboard, tmp_path):
    text = rendered(f"{tensorboard}/#custom_scalars", tmp_path)
    assert TRAIN_AND_VAL in text, text[:3000]
    # Each chart draws train and val of every run that has the metric, and nothing else (the
    # hparams sub-runs' final points stay out): loss 2 × 3 runs, mse_hole 2 and the inpainting
    # run's 2 baselines. (acc's count falls below the printed page's first sheet, which is all
    # Chromium prints of this app.)
    assert " loss " in text and " mse_hole " in text and " acc " in text, text[:3000]
    assert "Matches (6) mse_hole" in text and "Matches (4)" in text, text[:3000]


@needs_browser
def test_the_browser_shows_hparams_trials_with_their_swept_choice(tensorboard, tmp_path):
    text = rendered(f"{tensorboard}/#hparams", tmp_path)
    assert "Trial ID" in text and " model " in text and " linear " in text, text[:3000]
    assert " mlp " in text and "sweep/0_model" in text and "inpainting" in text, text[:3000]
