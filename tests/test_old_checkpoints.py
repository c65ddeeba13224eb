"""A checkpoint written by the code before the reorganisation (issue #25) still evaluates,
predicts and resumes: the layout may change, what a stored file means may not.

The old code is main at 2b77b21, taken from this clone's history (`git archive`): it trains a
linear MNIST run, then its own dlcourse-eval and dlcourse-predict answer for that checkpoint.
Today's commands must give the same answers. No checkpoint is kept in the repository."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, call, tiny_digits
from PIL import Image

OLD_CODE = "2b77b21"  # the last commit of the flat src/dlcourse/ layout (that of 622763d)


@pytest.fixture(scope="module")
def old(shared_mnist, tmp_path_factory) -> dict:
    """The old code's checkpoint (a linear run of 6 steps), and its own eval and predict output."""
    root = tmp_path_factory.mktemp("old_code")
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", OLD_CODE, "src", "configs"], capture_output=True
    )
    if archive.returncode:
        pytest.skip(f"commit {OLD_CODE} is not in this clone's history (a shallow clone?)")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as files:
        files.extractall(root, filter="data")
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "DLCOURSE_DATA_DIR": str(shared_mnist)}

    def old_command(module: str, *argv: str) -> str:
        command = [sys.executable, "-m", f"dlcourse.{module}", *argv]
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-1000:]
        return done.stdout

    run = root / "run"
    old_command("train", "model=linear", "trainer.epochs=2", "trainer.limit_train_batches=3",
                "trainer.limit_eval_batches=2", "trainer.progress_bar=false",
                f"hydra.run.dir={run}")  # fmt: skip
    last = run / "checkpoints" / "last.pt"
    old_command("evaluate", f"ckpt_path={last}", f"output_path={root / 'old_eval.json'}")
    images, _ = tiny_digits(10, seed=3)
    Image.fromarray(images[3].byte().numpy(), mode="L").save(root / "three.png")
    predicted = old_command("predict", str(last), str(root / "three.png"), "--json")
    return {
        "checkpoint": last,
        "eval": json.loads((root / "old_eval.json").read_text()),
        "predict": json.loads(predicted),
        "image": root / "three.png",
    }


@pytest.fixture
def old_run(old, tmp_path) -> Path:
    """A run folder holding only the old last.pt, as a user who kept it would have it."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(old["checkpoint"], tmp_path / "run" / "checkpoints" / "last.pt")
    return tmp_path / "run"


def test_an_old_checkpoint_evaluates_as_the_old_code_did(
    old, old_run, shared_mnist, tmp_path, monkeypatch, capsys
):
    output = tmp_path / "eval.json"
    argv = [f"ckpt_path={old_run}", f"data_dir={shared_mnist}", f"output_path={output}"]
    status, printed = call("dlcourse-eval", argv, monkeypatch, capsys)
    assert status == 0, printed
    assert json.loads(output.read_text()) == pytest.approx(old["eval"], rel=1e-6)


def test_an_old_checkpoint_predicts_as_the_old_code_did(old, old_run, monkeypatch, capsys):
    argv = [str(old_run / "checkpoints" / "last.pt"), str(old["image"]), "--json"]
    status, printed = call("dlcourse-predict", argv, monkeypatch, capsys)
    assert status == 0, printed
    [answer], [expected] = json.loads(printed), old["predict"]
    assert [c["class"] for c in answer["top"]] == [c["class"] for c in expected["top"]]
    probabilities = [c["probability"] for c in answer["top"]]
    assert probabilities == pytest.approx([c["probability"] for c in expected["top"]], abs=1e-6)


def test_an_old_checkpoint_resumes_where_it_stopped(old_run, shared_mnist, monkeypatch, capsys):
    argv = [f"resume={old_run}", "trainer.epochs=3", f"dataset.data_dir={shared_mnist}"]
    status, printed = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 0, printed
    resumed = torch.load(old_run / "checkpoints" / "last.pt", weights_only=True)
    assert (resumed["epoch"], resumed["step"]) == (4, 9)  # 2 epochs of 3 steps, then a third
    assert [entry["epoch"] for entry in resumed["history"]] == [1, 2, 3]
    metrics = json.loads((old_run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["steps"] == 9
