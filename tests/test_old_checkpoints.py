"""A checkpoint written by the code before the reorganisation (issue #25) still evaluates,
predicts and resumes: the layout may change, what a stored file means may not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import call, tiny_digits
from PIL import Image

OLD = Path(__file__).parent / "fixtures" / "checkpoint_2b77b21" / "last.pt"


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A run folder holding only the old last.pt, as a user who kept it would have it."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(OLD, tmp_path / "run" / "checkpoints" / "last.pt")
    return tmp_path / "run"


def test_an_old_checkpoint_evaluates_to_its_own_accuracy(
    old_run, shared_mnist, tmp_path, monkeypatch, capsys
):
    """On the 10,000 test images it scores what dlcourse-eval at 2b77b21, the code that wrote
    it, measured: 6,479 right (its run tested only 2 batches: 61.1 %)."""
    output = tmp_path / "eval.json"
    argv = [f"ckpt_path={old_run}", f"data_dir={shared_mnist}", f"output_path={output}"]
    status, printed = call("dlcourse-eval", argv, monkeypatch, capsys)
    assert status == 0, printed
    metrics = json.loads(output.read_text())
    assert metrics["test/acc"] == pytest.approx(0.6479, abs=2e-4)  # float rounding


def test_an_old_checkpoint_predicts_a_digit(old_run, tmp_path, monkeypatch, capsys):
    """The same answer as dlcourse-predict at 2b77b21 gave for this image (a weak model's)."""
    images, _ = tiny_digits(10, seed=3)
    Image.fromarray(images[3].byte().numpy(), mode="L").save(tmp_path / "three.png")
    argv = [str(old_run / "checkpoints" / "last.pt"), str(tmp_path / "three.png"), "--json"]
    status, printed = call("dlcourse-predict", argv, monkeypatch, capsys)
    assert status == 0, printed
    [answer] = json.loads(printed)
    assert [(c["class"], c["name"]) for c in answer["top"]] == [(4, "4"), (1, "1"), (5, "5")]
    probabilities = [c["probability"] for c in answer["top"]]
    assert probabilities == pytest.approx([0.218704, 0.135522, 0.120549], abs=1e-4)


def test_an_old_checkpoint_resumes_where_it_stopped(old_run, shared_mnist, monkeypatch, capsys):
    argv = [f"resume={old_run}", "trainer.epochs=3", f"dataset.data_dir={shared_mnist}"]
    status, printed = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 0, printed
    resumed = torch.load(old_run / "checkpoints" / "last.pt", weights_only=True)
    assert (resumed["epoch"], resumed["step"]) == (4, 9)  # 2 epochs of 3 steps, then a third
    assert [entry["epoch"] for entry in resumed["history"]] == [1, 2, 3]
    metrics = json.loads((old_run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["steps"] == 9
