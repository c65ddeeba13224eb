"""The debug= presets (configs/debug/), fractional batch limits, and tags=[...] (issue #27,
point 3): Lightning-Hydra-Template's habits where they have an obvious place here."""

from __future__ import annotations

import json

import pytest
from helpers import STEPS_PER_EPOCH, compose_config, quick_overrides, run_command

from dlcourse.infrastructure.checkpoint import load_checkpoint
from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.run_folder import CHECKPOINTS, LAST, METRICS, PROFILE
from dlcourse.infrastructure.schema import limited
from dlcourse.run import train


def preset_run(tiny_mnist) -> list[str]:
    """The quick tiny-data settings, but for the number of epochs: the preset's own."""
    return [o for o in quick_overrides(tiny_mnist) if not o.startswith("trainer.epochs=")]


def test_a_batch_limit_is_a_count_or_a_fraction_as_in_lightning():
    assert [limited(None, 8), limited(3, 8), limited(30, 8)] == [8, 3, 8]
    assert [limited(0.5, 8), limited(0.01, 8), limited(1.0, 8)] == [4, 1, 8]  # at least 1


@pytest.mark.parametrize("value", ["0", "1.5", "0.0", "-2"])
def test_an_impossible_batch_limit_is_refused_in_one_line(value, tiny_mnist, tmp_path):
    cfg = compose_config([f"trainer.limit_train_batches={value}", *quick_overrides(tiny_mnist)])
    with pytest.raises(UserError, match="a fraction such as 0.25"):
        train(cfg, tmp_path)


def test_debug_fast_runs_one_batch_of_each_split_and_keeps_no_checkpoint(tiny_mnist, tmp_path):
    metrics = train(compose_config(["debug=fast", *preset_run(tiny_mnist)]), tmp_path)
    assert metrics["steps"] == 1 and metrics["epochs"] == 1
    assert (tmp_path / METRICS).is_file() and not (tmp_path / CHECKPOINTS).exists()


def test_debug_limit_trains_a_fraction_of_each_epoch(tiny_mnist, tmp_path):
    overrides = [*preset_run(tiny_mnist), "debug=limit", "trainer.limit_train_batches=0.5"]
    metrics = train(compose_config(overrides), tmp_path)
    assert metrics["steps"] == 3 * STEPS_PER_EPOCH // 2  # 3 epochs of half the batches


def test_debug_overfit_drives_the_training_loss_down_on_a_few_fixed_batches(tiny_mnist, tmp_path):
    cfg = compose_config(["debug=overfit", "model=mlp", *preset_run(tiny_mnist)])
    assert cfg.dataset.train_subset == 256 and cfg.trainer.epochs == 30
    shorter = ["dataset.train_subset=64", "trainer.epochs=12", "optimizer.lr=0.1"]
    overrides = ["model=mlp", *quick_overrides(tiny_mnist), "debug=overfit", *shorter]
    metrics = train(compose_config(overrides), tmp_path)
    saved = load_checkpoint(tmp_path / CHECKPOINTS / LAST)["history"]
    history = [entry["train/loss"] for entry in saved]
    assert metrics["steps"] == 12 * 2  # the same 64 images, 2 batches, every epoch
    assert history[-1] < 0.2 * history[0], history


def test_debug_profiler_writes_a_trace_of_the_training_steps(tiny_mnist, tmp_path):
    train(compose_config(["debug=profiler", *preset_run(tiny_mnist)]), tmp_path)
    [trace] = (tmp_path / PROFILE).glob("*.pt.trace.json")  # Chrome's format: Perfetto reads it
    events = json.loads(trace.read_text())["traceEvents"]
    steps = {event["name"] for event in events if event.get("name", "").startswith("ProfilerStep#")}
    assert len(steps) == 5, steps  # profile_steps, after one step of warm-up


def test_debug_nan_names_the_operation_that_made_the_nan(tiny_mnist, tmp_path):
    command = [
        "dlcourse-train",
        "debug=nan",
        "model=mlp",
        "optimizer.lr=1e30",
        *quick_overrides(tiny_mnist),
    ]
    result = run_command(command, tmp_path, tiny_mnist)  # `nan` is the option's name, not a float
    assert result.returncode == 2 and "Traceback (most recent call last)" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "anomaly detection: Function '" in line and "Backward" in line and "nan" in line
    assert "debug=nan" in next((tmp_path / "outputs" / "runs").iterdir()).name


def test_tags_are_kept_with_the_run_shown_and_picked_by_dlcourse_runs(tiny_mnist, tmp_path):
    for tags in ("[baseline,lecture3]", "[lecture3]"):
        command = ["dlcourse-train", f"tags={tags}", *quick_overrides(tiny_mnist)]
        assert run_command(command, tmp_path, tiny_mnist).returncode == 0
    both = run_command(["dlcourse-runs", "--tag", "lecture3"], tmp_path, tiny_mnist)
    assert both.stdout.count("#lecture3") == 2, both.stdout
    chosen = run_command(["dlcourse-runs", "--tag", "baseline", "--json"], tmp_path, tiny_mnist)
    [run] = json.loads(chosen.stdout)
    assert run["tags"] == ["baseline", "lecture3"] and run["status"] == "finished"
