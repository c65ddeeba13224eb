"""trainer.ema_decay: an exponential moving average of the weights is what a run evaluates,
saves as its model, tests and exports; it resumes exactly; out-of-range decays are refused."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from helpers import call, compose_config, quick_overrides
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

from dlcourse.commands.evaluate import evaluate_checkpoint
from dlcourse.infrastructure.checkpoint import load_checkpoint
from dlcourse.infrastructure.errors import TrainingInterrupted, UserError
from dlcourse.run import train
from dlcourse.trainer import Trainer

DECAY = 0.75  # far from 1, so that the average differs plainly from the last weights


def ema_config(tiny_mnist, decay: float = DECAY, *extra: str):
    overrides = ["model=mlp", "model.hidden_sizes=[16]", "model.dropout=0.2", *extra]
    return compose_config([*quick_overrides(tiny_mnist), *overrides, f"trainer.ema_decay={decay}"])


def test_the_saved_model_is_the_moving_average_of_the_trained_weights(tiny_mnist, tmp_path):
    """Computed by hand from the weights after every optimizer step: the first step's weights,
    then w_ema ← d·w_ema + (1 − d)·w; the trained weights themselves are kept for resuming."""
    by_hand: dict[str, torch.Tensor] = {}

    def average(optimizer, args, kwargs):
        weights = {n: p.detach().clone() for n, p in model_of[optimizer].named_parameters()}
        for name, value in weights.items():
            by_hand[name] = (
                value if name not in by_hand else DECAY * by_hand[name] + (1 - DECAY) * value
            )

    model_of = {}
    fit = Trainer.fit

    def remember(trainer):
        model_of[trainer.optimizer] = trainer.raw_model
        return fit(trainer)

    hook = register_optimizer_step_post_hook(average)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Trainer, "fit", remember)
            train(ema_config(tiny_mnist), tmp_path)
    finally:
        hook.remove()
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for name, value in by_hand.items():
        torch.testing.assert_close(last["model"][name], value, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(last["trained_model"][name], value), name
    assert set(last["trained_model"]) == set(last["model"])


def test_the_average_is_what_is_tested_and_exported(tiny_mnist, tmp_path):
    metrics = train(ema_config(tiny_mnist), tmp_path)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    exported = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(exported[name], best["model"][name]) for name in exported)
    assert any(not torch.equal(exported[n], best["trained_model"][n]) for n in exported)
    # dlcourse-eval builds the model from best.pt's "model": the run's test/* are of those weights
    measured = evaluate_checkpoint(tmp_path, output_path=tmp_path / "eval.json")
    assert measured["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert measured["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-5)


def test_a_resumed_ema_run_matches_an_uninterrupted_one_exactly(tiny_mnist, tmp_path, monkeypatch):
    straight = train(ema_config(tiny_mnist), tmp_path / "straight")
    original = Trainer.train_step

    def train_step(self, batch):  # a real SIGINT after optimizer step 5, mid-epoch
        result = original(self, batch)
        if self.position.step + 1 == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", train_step)
        with pytest.raises(TrainingInterrupted):
            train(ema_config(tiny_mnist), tmp_path / "stopped")
    saved = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    cfg = OmegaConf.create(saved["config"])
    cfg.resume = str(tmp_path / "stopped")
    resumed = train(cfg, tmp_path / "stopped")
    for name in ("last.pt", "best.pt"):
        expected = load_checkpoint(tmp_path / "straight" / "checkpoints" / name)
        actual = load_checkpoint(tmp_path / "stopped" / "checkpoints" / name)
        for part in ("model", "trained_model"):
            assert all(torch.equal(expected[part][k], actual[part][k]) for k in expected[part])
    straight.pop("train_seconds"), resumed.pop("train_seconds")
    assert resumed == straight


def test_turning_ema_on_when_resuming_a_run_without_it(tiny_mnist, tmp_path, monkeypatch, capsys):
    """trainer.* may change on resume: the average starts from the stopped run's weights."""
    cfg = compose_config([*quick_overrides(tiny_mnist), "model=linear", "trainer.epochs=1"])
    train(cfg, tmp_path / "run")
    argv = [f"resume={tmp_path / 'run'}", "trainer.epochs=2", f"trainer.ema_decay={DECAY}"]
    status, output = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 0, output[-600:]
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["config"]["trainer"]["ema_decay"] == DECAY and "trained_model" in last
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5])
def test_a_decay_outside_zero_to_one_is_refused(decay, tiny_mnist, tmp_path):
    with pytest.raises(UserError, match=r"trainer\.ema_decay.*0 \(off\), or below 1"):
        train(ema_config(tiny_mnist, decay), tmp_path)
    assert not (tmp_path / "checkpoints").exists()
