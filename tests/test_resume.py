"""Checkpoints survive crashes, and a stopped run resumes bit-exactly where it stopped."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from helpers import STEPS_PER_EPOCH, compose_config, quick_overrides, read_events
from omegaconf import OmegaConf

from dlcourse.infrastructure import checkpoint as checkpoint_module
from dlcourse.infrastructure.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from dlcourse.infrastructure.errors import TrainingInterrupted, UserError
from dlcourse.resume import resume_config
from dlcourse.run import train
from dlcourse.trainer import Trainer


def run_config(tiny_mnist, scheduler="onecycle"):
    # An MLP with dropout, so that resuming must restore the random number generators too.
    overrides = [
        "model=mlp",
        "model.hidden_sizes=[32]",
        "model.dropout=0.3",
        f"scheduler={scheduler}",
        "optimizer=adam",
        "trainer.epochs=3",
    ]
    return compose_config([*quick_overrides(tiny_mnist), *overrides])


def logged_losses(run_dir):
    """The epochs' mean losses (the train sub-run's curve) and the steps' losses."""
    where = ((run_dir / "train", "curves/loss"), (run_dir, "steps/loss"))
    return [
        (tag, e.step, e.value) for folder, tag in where for e in read_events(folder).Scalars(tag)
    ]


def interrupt_at(monkeypatch, stop_step: int, signal_number: int = signal.SIGINT) -> None:
    """Send a real signal to this process right after optimizer step `stop_step`."""
    original = Trainer.train_step

    def train_step(self, batch):
        result = original(self, batch)
        if self.position.step + 1 == stop_step:
            os.kill(os.getpid(), signal_number)
        return result

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("stop_step", [3, STEPS_PER_EPOCH, STEPS_PER_EPOCH + 5])
def test_resumed_run_matches_an_uninterrupted_one_exactly(
    stop_step, tiny_mnist, tmp_path, monkeypatch
):
    straight = train(run_config(tiny_mnist), tmp_path / "straight")

    with monkeypatch.context() as patch:
        interrupt_at(patch, stop_step)
        with pytest.raises(TrainingInterrupted) as stopped:
            train(run_config(tiny_mnist), tmp_path / "stopped")
    assert stopped.value.exit_code == 130
    saved = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert saved["step"] == stop_step

    # TensorBoard orders event files by name: the timestamp (in seconds), then a per-process
    # counter compared as text. A resume in a new process always sorts after; in this same
    # process, wait for the next second so that it does too.
    time.sleep(1.0 - time.time() % 1.0 + 0.01)
    resumed_cfg = OmegaConf.create(saved["config"])
    resumed_cfg.resume = str(tmp_path / "stopped")
    resumed = train(resumed_cfg, tmp_path / "stopped")

    for name in ("last.pt", "best.pt"):
        expected = load_checkpoint(tmp_path / "straight" / "checkpoints" / name)["model"]
        actual = load_checkpoint(tmp_path / "stopped" / "checkpoints" / name)["model"]
        assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert logged_losses(tmp_path / "stopped") == logged_losses(tmp_path / "straight")
    straight.pop("train_seconds"), resumed.pop("train_seconds")
    assert resumed == straight


def test_checkpoint_holds_the_whole_training_state(tiny_mnist, tmp_path):
    train(run_config(tiny_mnist), tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["format_version"] == 1
    assert {"python", "torch", "numpy"} <= set(checkpoint["rng"])
    assert checkpoint["epoch"] == 4 and checkpoint["batch_in_epoch"] == 0  # 3 epochs done
    assert checkpoint["best"]["epoch"] in (1, 2, 3) and 0 <= checkpoint["best"]["value"] <= 1
    assert "scaler" in checkpoint and checkpoint["optimizer"]["state"]


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}, "step": 1}, path)

    def crash_half_way(obj, file):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the process dies mid-write

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "config": {}, "step": 2}, path)
    assert not list((tmp_path / "checkpoints").glob(".last.pt.*"))  # the half file is removed
    (tmp_path / "checkpoints" / ".last.pt.x7f3k2").write_bytes(b"PK")  # as a kill -9 leaves it
    assert find_checkpoint(tmp_path) == path  # the temporary file is never picked
    assert load_checkpoint(path)["step"] == 1


def test_resume_applies_setting_overrides_but_refuses_new_components(tiny_mnist, tmp_path):
    cfg = run_config(tiny_mnist, scheduler="step")
    train(cfg, tmp_path)
    cfg.resume = str(tmp_path)
    resumed, _ = resume_config(cfg, [f"resume={tmp_path}", "trainer.epochs=5"])
    assert resumed.trainer.epochs == 5 and resumed.model.hidden_sizes == [32]
    assert resumed.resume == str(tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match="'model=cnn' cannot change a resumed run's components"):
        resume_config(cfg, [f"resume={tmp_path}", "model=cnn"])


def test_resume_from_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="neither a checkpoint file nor a run folder"):
        find_checkpoint(tmp_path / "no-such-run")
    with pytest.raises(UserError, match="no checkpoint in run folder"):
        find_checkpoint(tmp_path)
