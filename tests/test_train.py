"""The composition function end to end, in process, on tiny data."""

from __future__ import annotations

import gc
import json
import math
import sys
import types

import pytest
import torch
from helpers import (
    STEPS_PER_EPOCH,
    TINY_EPOCHS,
    collector_when_training_starts,
    compose_config,
    quick_overrides,
)

from dlcourse.commands import console
from dlcourse.commands.evaluate import evaluate_checkpoint
from dlcourse.data.batches import DataSplits, TensorBatches
from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.loggers import NullLogger
from dlcourse.infrastructure.run_files import NullRunFiles
from dlcourse.infrastructure.schema import TrainerSettings
from dlcourse.metrics import METRIC_WINDOW
from dlcourse.models import LinearClassifier
from dlcourse.run import train
from dlcourse.schedulers import constant
from dlcourse.tasks import ClassificationTask
from dlcourse.trainer import Trainer

CHECKPOINT_KEYS = {
    "format_version",
    "task",
    "input_shape",
    "class_names",
    "preprocessing",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "batch_in_epoch",
    "step",
    "epoch_sums",
    "epoch_count",
    "nonfinite_steps",
    "train_seconds",
    "evaluations_without_improvement",
    "history",
    "rng",
    "metrics",
    "best",
    "config",
}


def test_train_writes_metrics_and_checkpoints(tiny_mnist, tmp_path):
    cfg = compose_config(["model=mlp", "model.hidden_sizes=[32]", *quick_overrides(tiny_mnist)])
    metrics = train(cfg, tmp_path)

    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for key in ("test/acc", "test/loss", "val/acc", "val/loss", "train/loss", "train/acc"):
        assert math.isfinite(metrics[key])
    for key in ("test/acc", "val/acc", "train/acc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["epochs"] == 2 and 1 <= metrics["best_epoch"] <= 2
    assert metrics["steps"] == TINY_EPOCHS * STEPS_PER_EPOCH and metrics["train_seconds"] > 0
    # The bands in the tiny images are easy: two epochs must learn them.
    assert metrics["test/acc"] > 0.5

    for name in ("last.pt", "best.pt"):
        checkpoint = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert set(checkpoint) == CHECKPOINT_KEYS
        assert checkpoint["config"]["model"]["hidden_sizes"] == [32]
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["batch_in_epoch"] == 0  # epoch 2 done: epoch 3 is next
    assert last["step"] == metrics["steps"]


def test_eval_reproduces_the_test_metrics_of_the_best_checkpoint(tiny_mnist, tmp_path):
    cfg = compose_config(["model=linear", *quick_overrides(tiny_mnist)])
    metrics = train(cfg, tmp_path)
    evaluated = evaluate_checkpoint(tmp_path / "checkpoints" / "best.pt", device="cpu")
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"])
    assert evaluated["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-5)
    assert json.loads((tmp_path / "checkpoints" / "best.test.json").read_text()) == evaluated


def test_same_seed_gives_the_same_metrics(tiny_mnist, tmp_path):
    cfg = compose_config(["model=cnn", "model.channels=[4,8]", *quick_overrides(tiny_mnist)])
    first, second = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    first.pop("train_seconds"), second.pop("train_seconds")
    assert first == second


def test_limit_batches_and_eval_every(tiny_mnist, tmp_path):
    overrides = [
        "trainer.limit_train_batches=3",
        "trainer.eval_every_n_epochs=2",
        "trainer.epochs=3",
    ]
    metrics = train(compose_config([*quick_overrides(tiny_mnist), *overrides]), tmp_path)
    assert metrics["steps"] == 9
    assert metrics["best_epoch"] in (2, 3)  # validated at epochs 2 and 3 (the last) only


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("scheduler", ["step", "cosine", "onecycle"])
def test_losses_and_schedulers_train(loss, scheduler, tiny_mnist, tmp_path):
    cfg = compose_config(
        [
            f"loss={loss}",
            f"scheduler={scheduler}",
            "optimizer.lr=0.01",
            *quick_overrides(tiny_mnist),
        ]
    )
    assert math.isfinite(train(cfg, tmp_path)["test/loss"])


def test_bf16_and_grad_clip_run_on_the_cpu(tiny_mnist, tmp_path):
    cfg = compose_config(
        ["trainer.precision=bf16", "trainer.grad_clip=1.0", *quick_overrides(tiny_mnist)]
    )
    assert math.isfinite(train(cfg, tmp_path)["test/loss"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_mnist, tmp_path):
    with pytest.raises(UserError, match="no CUDA GPU"):
        train(compose_config([*quick_overrides(tiny_mnist), "trainer.device=cuda"]), tmp_path)


def test_model_that_does_not_fit_the_data_is_refused_before_training(tiny_mnist, tmp_path):
    with pytest.raises(
        UserError,
        match=r"LinearClassifier with CrossEntropyLoss cannot take this dataset's batches \(inputs "
        r"of shape \(1, 28, 28\)\)",
    ):  # a size given on the command line wins over the data's, and must fit it
        settings = ["model=linear", "model.input_size=100", *quick_overrides(tiny_mnist)]
        train(compose_config(settings), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_trainer_key_is_a_clear_error(tiny_mnist, tmp_path):
    with pytest.raises(UserError, match="trainer.epochz is not a setting of trainer"):
        train(compose_config([*quick_overrides(tiny_mnist), "+trainer.epochz=3"]), tmp_path)


def test_linear_preset_reaches_90_percent_after_one_epoch_on_real_mnist(shared_mnist, tmp_path):
    cfg = compose_config(
        [
            "experiment=linear_mnist",
            f"paths.data_dir={shared_mnist}",
            "trainer.epochs=1",
            "trainer.device=cpu",
        ]
    )
    metrics = train(cfg, tmp_path)
    assert metrics["test/acc"] >= 0.90, metrics


def test_channels_last_and_compile_switches_run_on_the_cpu(tiny_mnist, tmp_path):
    overrides = [
        "model=cnn",
        "model.channels=[4,8]",
        "trainer.channels_last=true",
        "trainer.compile=true",
        "trainer.epochs=1",
        "trainer.limit_train_batches=3",
    ]
    metrics = train(compose_config([*quick_overrides(tiny_mnist), *overrides]), tmp_path)
    assert math.isfinite(metrics["test/loss"])
    state = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert not any(
        key.startswith("_orig_mod") for key in state
    )  # saved without the compile wrapper


def test_training_metrics_equal_the_loss_and_accuracy_of_every_batch(tmp_path):
    """Training metrics are queued and summed a window of steps at a time: with a learning rate of
    0 (the weights stay put) they must equal the model's loss and accuracy over the training set,
    across a full window and a partial one."""
    torch.manual_seed(0)
    images, labels = torch.randn(203, 1, 28, 28), torch.randint(0, 10, (203,))
    batches = TensorBatches((images, labels), batch_size=10, shuffle=True, seed=0)
    assert (
        METRIC_WINDOW < len(batches) < 2 * METRIC_WINDOW
    )  # 21 steps: one full window, one partial
    data = DataSplits(
        batches, batches, batches, ClassificationTask(list("0123456789")), (1, 28, 28)
    )
    model, loss_fn = LinearClassifier(), torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    settings = TrainerSettings(epochs=1, device="cpu", progress_bar=False, log_every_n_steps=7)
    trainer = Trainer(
        model,
        loss_fn,
        optimizer,
        constant(optimizer, 21, 21),
        data,
        NullLogger(),
        settings,
        torch.device("cpu"),
        files=NullRunFiles(tmp_path),
        config={},
    )
    metrics = trainer.train_one_epoch(1)

    with torch.no_grad():
        outputs = model(images)
    assert metrics["train/loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(outputs, labels).item(), rel=1e-6
    )
    assert metrics["train/acc"] == (outputs.argmax(dim=1) == labels).sum().item() / len(labels)


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 5, 8, 20])
def test_onecycle_takes_runs_of_any_length(total_steps):
    """torch's OneCycleLR divides by zero when warm-up is exactly one step (4 steps at 25 %):
    a two-batch smoke run of a one-cycle preset must still run."""
    from dlcourse.schedulers import onecycle

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = onecycle(optimizer, total_steps, total_steps, max_lr=0.1, pct_start=0.25)
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()
    assert 0 < optimizer.param_groups[0]["lr"] < 0.1


def test_early_stopping_keeps_the_best_weights_and_resumes_exactly(
    tiny_mnist, tmp_path, monkeypatch
):
    """With patience 1 and a learning rate that makes the loss worse after the first epoch, the
    run stops after the second epoch, tests epoch 1's weights, and says so in metrics.json;
    resuming it trains nothing more."""
    settings = ["trainer.epochs=6", "trainer.early_stopping.patience=1", "optimizer.lr=5.0"]
    overrides = [*quick_overrides(tiny_mnist), *settings, "model=mlp", "model.hidden_sizes=[16]"]
    metrics = train(compose_config(overrides), tmp_path)
    assert metrics["epochs"] == 6 and metrics["epochs_run"] < 6
    assert metrics["epochs_run"] == metrics["best_epoch"] + 1  # one evaluation without improvement
    from dlcourse.infrastructure.checkpoint import load_checkpoint

    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == metrics["best_epoch"] + 1
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["evaluations_without_improvement"] == 1
    cfg = compose_config(overrides)
    cfg.resume = str(tmp_path)
    resumed = train(cfg, tmp_path)  # patience already ran out: no epoch more
    assert resumed["epochs_run"] == metrics["epochs_run"] and resumed["steps"] == metrics["steps"]


@pytest.mark.parametrize("collecting_at_start", [False, True])
def test_start_up_objects_are_frozen_while_training_only_after_a_start_up_without_collection(
    collecting_at_start, tiny_mnist, tmp_path, monkeypatch
):
    """dlcourse-train starts with the garbage collector off (dlcourse.commands.console.train);
    the run turns it on once built, with start-up's objects frozen, and unfreezes them when it
    ends. A run started from Python with the collector on leaves it alone."""
    cfg = compose_config(["model=linear", *quick_overrides(tiny_mnist)])
    seen = collector_when_training_starts(monkeypatch)
    if not collecting_at_start:
        gc.disable()
    try:
        train(cfg, tmp_path)
        after = (gc.isenabled(), gc.get_freeze_count())
    finally:
        gc.enable()
        gc.unfreeze()
    ((enabled, frozen),) = seen
    assert enabled
    assert (frozen > 0) == (not collecting_at_start)
    assert after == (True, 0)


def test_the_train_command_starts_without_garbage_collection(monkeypatch):
    seen = []
    command = types.SimpleNamespace(main=lambda: seen.append(gc.isenabled()))
    monkeypatch.setitem(sys.modules, "dlcourse.commands.train", command)
    monkeypatch.setattr(sys, "argv", ["dlcourse-train"])
    try:
        console.train()
        after = (gc.isenabled(), gc.get_freeze_count())
    finally:
        gc.enable()
        gc.unfreeze()
    assert seen == [False]
    assert after[0] and after[1] > 0  # frozen as the process ends: its exit scans nothing
