"""Batched members (issue #28 point 1, dlcourse/sweeps/members.py): runs that differ only in
seed and optimizer settings, trained as one batched model, are each the run a separate command
gives, to float tolerance, in a folder every other command takes."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import call, quick_overrides, run_command

from dlcourse.infrastructure.checkpoint import load_checkpoint

# Batched matrix products (bmm under vmap) add in another order than a single run's mm: the
# same weights and data give outputs equal to float32 rounding, not bit for bit, and a few
# dozen steps carry that to about 1e-6 of the loss. Counts (accuracy) come out equal. Single
# weights drift further (measured: 1.6e-4 on one of 6,272): Adam divides each step by the root
# of the gradient's second moment, so a weight whose gradient is near zero takes full-size
# steps whose sign follows the rounding.
TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-3

SMALL_MLP = ["model=mlp", "model.hidden_sizes=[32]"]
SMALL_CNN = ["model=cnn", "model.channels=[4,8]", "model.hidden_sizes=[16]",
             "model.batch_norm=true", "model.dropout=0.0"]  # fmt: skip


def read(path):
    return json.loads(path.read_text())


def assert_same_run(batched, alone):
    """Two run folders hold the same run: metrics, each epoch's history, and the weights."""
    a, b = read(batched / "metrics.json"), read(alone / "metrics.json")
    for name in ("train/loss", "val/loss", "test/loss", "val/acc", "test/acc", "train/acc"):
        assert a[name] == pytest.approx(b[name], rel=TOLERANCE, abs=TOLERANCE), name
    assert a["best_epoch"] == b["best_epoch"] and a["steps"] == b["steps"]
    first, second = (load_checkpoint(f / "checkpoints" / "last.pt") for f in (batched, alone))
    for epoch_a, epoch_b in zip(first["history"], second["history"], strict=True):
        assert epoch_a["val/loss"] == pytest.approx(epoch_b["val/loss"], rel=TOLERANCE)
    for name, weight in second["model"].items():
        saved = first["model"][name]  # the member's own, not a view of the whole stack
        assert saved.untyped_storage().nbytes() == saved.nbytes
        torch.testing.assert_close(saved, weight, rtol=WEIGHT_TOLERANCE, atol=WEIGHT_TOLERANCE)
    # A member's optimizer state is its own, as a separate run's (Adam's moments, SGD's momentum).
    states = first["optimizer"]["state"], second["optimizer"]["state"]
    assert states[0].keys() == states[1].keys() and states[0]
    for index, state in states[1].items():
        for key, value in state.items():
            torch.testing.assert_close(states[0][index][key], value, rtol=WEIGHT_TOLERANCE,
                                       atol=WEIGHT_TOLERANCE)  # fmt: skip


@pytest.mark.parametrize("model", [SMALL_MLP, SMALL_CNN], ids=["mlp", "cnn_batch_norm"])
def test_batched_seeds_are_the_runs_each_seed_gives_alone(
    model, tiny_mnist, tmp_path, monkeypatch, capsys
):
    common = [*model, *quick_overrides(tiny_mnist), "optimizer=adam", "optimizer.lr=0.01"]
    group = tmp_path / "batched"
    argv = [*common, "seeds=3", "trainer.batch_members=true", f"hydra.run.dir={group}"]
    status, text = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 0, text[-1500:]
    assert "3 members, trained as one batched model" in text
    separate = tmp_path / "separate"
    argv = [*common, "seeds=3", f"hydra.run.dir={separate}"]
    status, text = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 0, text[-1500:]
    for seed in (42, 43, 44):
        assert_same_run(group / f"seed={seed}", separate / f"seed={seed}")
    losses = {read(group / f"seed={seed}" / "metrics.json")["test/loss"] for seed in (42, 43, 44)}
    assert len(losses) == 3  # three different runs, not one run three times
    assert read(group / "metrics.json")["test/loss"] == pytest.approx(sum(losses) / 3)
    own_log = (group / "seed=42" / "train.log").read_text()  # its own lines, not the others'
    assert "seed=42: epoch 2/2" in own_log and "seed=43: epoch" not in own_log


def test_a_batched_sweep_gives_each_job_the_run_the_basic_launcher_gives(tiny_mnist, tmp_path):
    grid = ["optimizer=sgd", "optimizer.lr=0.05,0.2", "seed=1,2", "optimizer.momentum=0.9"]
    command = ["dlcourse-train", "-m", *SMALL_MLP, *quick_overrides(tiny_mnist), *grid]
    batched = run_command([*command, "hydra/launcher=batched", "hydra.sweep.dir=batched"], tmp_path)
    assert batched.returncode == 0, batched.stderr[-1500:]
    assert "4 members, trained as one batched model" in batched.stdout + batched.stderr
    basic = run_command([*command, "hydra.sweep.dir=basic"], tmp_path)
    assert basic.returncode == 0, basic.stderr[-1500:]
    jobs = sorted(p.name for p in (tmp_path / "batched").iterdir() if p.is_dir())
    assert jobs == sorted(p.name for p in (tmp_path / "basic").iterdir() if p.is_dir())
    assert len(jobs) == 4
    for job in jobs:
        assert_same_run(tmp_path / "batched" / job, tmp_path / "basic" / job)
    # Every command takes a member as a run: the sweep report ranks the jobs, and one resumes.
    report = run_command(["dlcourse-sweep-report", "batched"], tmp_path)
    assert report.returncode == 0, report.stderr[-800:]
    member = tmp_path / "batched" / jobs[0]
    resumed = run_command(["dlcourse-train", f"resume={member}", "trainer.epochs=3"], tmp_path,
                          tiny_mnist)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert read(member / "metrics.json")["epochs_run"] == 3


def test_a_member_that_diverges_fails_alone_and_the_others_finish(tiny_mnist, tmp_path):
    grid = ["optimizer=sgd", "optimizer.lr=0.05,1e12", "scheduler=none"]
    command = ["dlcourse-train", "-m", *SMALL_MLP, *quick_overrides(tiny_mnist), *grid]
    swept = run_command([*command, "hydra/launcher=batched", "hydra.sweep.dir=sweep"], tmp_path)
    output = swept.stdout + swept.stderr
    assert swept.returncode == 1 and "Traceback" not in output, output[-1500:]
    assert "Sweep finished: 2 job(s)" in output and "1 failed" in output
    good, diverged = (
        tmp_path / "sweep" / name for name in ("0_optimizer.lr=0.05", "1_optimizer.lr=1e+12")
    )
    assert read(good / "metrics.json")["epochs_run"] == 2 and not (good / "failed.json").exists()
    failure = read(diverged / "failed.json")
    assert "became" in failure["error"] and "Try a lower optimizer.lr" in failure["error"]
    assert not (diverged / "metrics.json").exists()


def test_members_that_differ_in_more_than_seeds_and_optimizer_settings_are_refused(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    command = ["dlcourse-train", "-m", "model=linear,mlp", *quick_overrides(tiny_mnist)]
    swept = run_command([*command, "hydra/launcher=batched", "hydra.sweep.dir=sweep"], tmp_path)
    output = swept.stdout + swept.stderr
    assert swept.returncode == 1 and "Traceback" not in output, output[-1500:]
    assert "2 failed" in output
    jobs = [job for job in (tmp_path / "sweep").iterdir() if job.is_dir()]
    assert len(jobs) == 2
    for job in jobs:
        failure = read(job / "failed.json")
        assert (
            "may differ only in seed and optimizer or scheduler settings, not in model."
            in (failure["error"])
        )
        assert not (job / "checkpoints").exists()
    argv = [*SMALL_MLP, *quick_overrides(tiny_mnist), "seeds=2", "trainer.batch_members=true",
            "trainer.early_stopping.patience=2", f"hydra.run.dir={tmp_path / 'group'}"]  # fmt: skip
    status, text = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 2
    assert "error: trainer.early_stopping.patience works on one run at a time" in text
    assert "Traceback" not in text
