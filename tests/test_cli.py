"""The installed commands, run in a subprocess as a user would, on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import STEPS_PER_EPOCH, only_run_folder, quick_overrides, read_events, run_command

from dlcourse.infrastructure.config import config_dir


@pytest.mark.parametrize("model", ["linear", "mlp", "cnn"])
def test_train_command_writes_a_complete_run_folder(model, tiny_mnist, tmp_path):
    result = run_command(
        ["dlcourse-train", f"model={model}", *quick_overrides(tiny_mnist)], tmp_path, tiny_mnist
    )
    assert result.returncode == 0, result.stderr
    run_dir = only_run_folder(tmp_path / "outputs" / "runs")

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/acc", "test/loss", "val/acc", "best_epoch", "epochs", "train_seconds"} <= set(
        metrics
    )
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (
        run_dir / "checkpoints" / "best.pt"
    ).is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "Run folder:" in (run_dir / "train.log").read_text()
    assert "tensorboard --logdir" in result.stdout + result.stderr

    # TensorBoard: the curves in sub-runs train and val under one tag each (one chart, two
    # lines: see loggers.placement), the rest in the run itself.
    events, train_events, val_events = (read_events(run_dir / sub) for sub in ("", "train", "val"))
    expected = {"steps/loss", "steps/lr", "test/loss", "test/acc", "time/epoch_seconds"}
    assert expected | {"time/samples_per_second"} <= set(events.Tags()["scalars"])
    assert {"curves/loss", "curves/acc"} <= set(train_events.Tags()["scalars"])
    assert {"curves/loss", "curves/acc"} <= set(val_events.Tags()["scalars"])
    # train's curves/loss is the epoch's mean, the very value metrics.json holds for the last epoch.
    epoch_losses = train_events.Scalars("curves/loss")
    assert [e.step for e in epoch_losses] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert epoch_losses[-1].value == pytest.approx(metrics["train/loss"])
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    val_steps = [event.step for event in val_events.Scalars("curves/acc")]
    assert val_steps == [8, 16]  # 250 images / 32 per batch
    # Hyperparameters sit in one sub-run with the few final metrics the HParams tab shows (in
    # the run itself, every curve would become a column of it); the run holds none.
    assert "_hparams_/session_start_info" not in events.Tags()["tensors"]
    session = read_events(run_dir / "hparams")
    assert "_hparams_/session_start_info" in session.PluginTagToContent("hparams")
    final = {"best/val/acc", "test/acc", "test/loss", "last/train/loss"}
    assert set(session.Tags()["scalars"]) == {f"results/{name}" for name in final}
    assert session.Scalars("results/test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    sub_runs = {"hparams", "train", "val"}
    assert {p.name for p in run_dir.iterdir() if p.is_dir()} == {".hydra", "checkpoints", *sub_runs}


def test_multirun_gives_one_folder_per_job(tiny_mnist, tmp_path):
    command = [
        "dlcourse-train",
        "-m",
        "model=linear",
        "optimizer.lr=0.01,0.1",
        *quick_overrides(tiny_mnist),
    ]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    sweep = only_run_folder(tmp_path / "outputs" / "multirun")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    # Each job's folder: its number and what the sweep varies in it (not model=linear).
    assert [job.name for job in jobs] == ["0_optimizer.lr=0.01", "1_optimizer.lr=0.1"]
    learning_rates = {
        json.loads((job / "metrics.json").read_text())
        and (job / ".hydra" / "overrides.yaml").read_text().count("optimizer.lr=0.1")
        for job in jobs
    }
    assert learning_rates == {0, 1}


def test_missing_data_is_one_clear_message_and_a_non_zero_exit(tmp_path):
    result = run_command(["dlcourse-train", "dataset.download_missing=false"], tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert "error: MNIST is not in" in result.stderr
    assert "train-images-idx3-ubyte" in result.stderr


def test_eval_command_prints_and_writes_test_metrics(tiny_mnist, tmp_path):
    assert (
        run_command(
            ["dlcourse-train", *quick_overrides(tiny_mnist)], tmp_path, tiny_mnist
        ).returncode
        == 0
    )
    checkpoint = only_run_folder(tmp_path / "outputs" / "runs") / "checkpoints" / "best.pt"
    result = run_command(
        ["dlcourse-eval", f"ckpt_path={checkpoint}", f"output_path={tmp_path / 'm.json'}"],
        tmp_path,
        tiny_mnist,
    )
    assert result.returncode == 0, result.stderr
    assert "test/acc" in result.stdout
    assert set(json.loads((tmp_path / "m.json").read_text())) == {"test/acc", "test/loss"}


def test_eval_of_a_file_that_is_no_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    result = run_command(["dlcourse-eval", f"ckpt_path={tmp_path / 'bad.pt'}"], tmp_path)
    assert result.returncode != 0
    assert "error: could not load checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_the_config_groups(tmp_path):
    command = [sys.executable, "-X", "importtime", "-m", "dlcourse.commands.train", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert (
        "torch" not in imported and "dlcourse.infrastructure.config" in imported
    )  # --help answers without torch
    assert "model: alexnet, cnn, conv_inpaint, examples_cnn, linear, mlp" in result.stdout
    for group in ("model", "optimizer", "scheduler", "dataset", "experiment", "loss"):
        options = sorted(path.stem for path in (Path(config_dir()) / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in result.stdout


def test_describe_prints_each_options_settings_with_their_comments(tmp_path):
    result = run_command(["dlcourse-train", "--describe", "optimizer/adam", "trainer"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "# ---- optimizer=adam  (configs/optimizer/adam.yaml)" in result.stdout
    assert "lr: 0.001" in result.stdout and "# Adam: dlcourse-train optimizer=adam" in result.stdout
    assert "patience: null" in result.stdout and "never stop early" in result.stdout
    listing = run_command(["dlcourse-train", "--describe"], tmp_path)
    assert "mask: center_box, half, pixels, rectangles" in listing.stdout
    wrong = run_command(["dlcourse-train", "--describe", "optimiser"], tmp_path)
    assert wrong.returncode == 2 and "(did you mean optimizer?)" in wrong.stderr


def test_a_mistyped_key_is_judged_against_the_chosen_component(tmp_path):
    """model=cnn (or an experiment that picks it) has its own settings: a typo gets a suggestion
    from them, and an argument the YAML leaves out is named as such, with the + that adds it."""
    typo = run_command(["dlcourse-train", "model=cnn", "model.chanels=[8]"], tmp_path)
    assert typo.returncode == 2 and "(did you mean model.channels" in typo.stderr
    left_out = run_command(
        ["dlcourse-train", "experiment=fast_cnn_mnist", "model.feature_dropout=0"], tmp_path
    )
    assert left_out.returncode == 2
    assert "add it with +model.feature_dropout=..." in left_out.stderr
    assert "in_channels, image_size" in left_out.stderr  # the CNN's settings, not the default's
