"""Sweeps: a failing job is recorded and the rest run, the report, parallel jobs, requeues.

Optuna searches: tests/test_search.py; a real SLURM: tests/test_slurm.py."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from helpers import (
    call,
    collector_when_training_starts,
    only_run_folder,
    quick_overrides,
    run_command,
)

from dlcourse.infrastructure.errors import UserError
from dlcourse.sweeps.report import report


def test_a_failing_job_is_recorded_and_the_sweep_exits_non_zero(tiny_mnist, tmp_path):
    command = ["dlcourse-train", "-m", "optimizer.lr=0.01,-1,0.05", *quick_overrides(tiny_mnist)]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 1
    assert "job 1_optimizer.lr=-1 failed: optimizer.lr=-1 is impossible" in result.stderr
    sweep = only_run_folder(tmp_path / "outputs" / "multirun")
    assert (sweep / "0_optimizer.lr=0.01" / "metrics.json").is_file()
    assert (sweep / "2_optimizer.lr=0.05" / "metrics.json").is_file()
    failure = json.loads((sweep / "1_optimizer.lr=-1" / "failed.json").read_text())
    assert failure["type"] == "UserError" and "optimizer.lr=-1" in failure["error"]

    reported = run_command(["dlcourse-sweep-report", str(sweep)], tmp_path)
    assert reported.returncode == 0, reported.stderr
    assert "2 done, 1 failed; sorted by val/acc (max)" in reported.stdout
    assert (sweep / "report.png").stat().st_size > 1000


def test_a_sweeps_process_collects_garbage(tiny_mnist, tmp_path, monkeypatch, capsys):
    """dlcourse-train starts without garbage collection (dlcourse.commands.console.train); a
    sweep's process turns it back on at once (it may never build a run itself): its jobs train
    with the collector on, and nothing frozen."""
    seen = collector_when_training_starts(monkeypatch)
    argv = ["-m", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}", *quick_overrides(tiny_mnist)]
    status, output = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 0, output
    assert seen == [(True, 0), (True, 0)]


def fake_sweep(root, jobs):
    """Job folders as a sweep leaves them: overrides, then metrics.json or failed.json."""
    for name, overrides, outcome in jobs:
        job = root / name
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        file = "metrics.json" if "error" not in outcome else "failed.json"
        (job / file).write_text(json.dumps({**outcome, **kinds(outcome)}))
    return root


def kinds(metrics: dict) -> dict:
    """What a run's metrics.json says of its metrics, as each task declares it."""
    if "val/acc" in metrics:
        return {"monitor": "val/acc", "higher_is_better": {"loss": False, "acc": True}}
    if "val/mse_hole" in metrics:
        return {"monitor": "val/mse_hole", "higher_is_better": {"loss": False, "mse_hole": False}}
    return {}


def test_report_sorts_marks_the_best_and_lists_failures(tmp_path):
    sweep = fake_sweep(
        tmp_path,
        [
            (
                "0",
                ["model=linear", "optimizer.lr=0.01", "seed=1"],
                {"val/acc": 0.90, "val/loss": 0.3},
            ),
            (
                "1",
                ["model=linear", "optimizer.lr=0.1", "seed=1"],
                {"val/acc": 0.93, "val/loss": 0.2},
            ),
            ("2", ["model=mlp", "optimizer.lr=0.01", "seed=1"], {"val/acc": 0.97, "val/loss": 0.1}),
            (
                "3",
                ["model=mlp", "optimizer.lr=0.1", "seed=1"],
                {"error": "the training loss became nan"},
            ),
        ],
    )
    markdown = report(sweep)
    table = [line for line in markdown.splitlines() if line.startswith("| ")][
        2:
    ]  # after header, rule
    assert [line.split(" | ")[1] for line in table] == ["2", "1", "0"]  # best val/acc first
    assert table[0].startswith("| ★ | 2 | mlp | 0.01 |")
    assert "seed" not in markdown.splitlines()[2]  # a setting every job shares is no column
    assert "- job 3 (model=mlp, optimizer.lr=0.1, seed=1): the training loss became nan" in markdown
    rows = list(csv.DictReader((sweep / "report.csv").read_text().splitlines()))
    assert [row["job"] for row in rows] == ["0", "1", "2", "3"] and rows[3]["error"]
    assert (sweep / "report.md").read_text() == markdown and (sweep / "report.png").is_file()

    by_loss = report(sweep, metric="val/loss")
    assert "sorted by val/loss (min)" in by_loss
    with pytest.raises(
        UserError,
        match="metric 'val/accuracy' is in no job's metrics.json; available: val/acc, val/loss",
    ):
        report(sweep, metric="val/accuracy")


def test_inpainting_sweeps_sort_by_hole_mse(tmp_path):
    sweep = fake_sweep(
        tmp_path,
        [
            ("0", ["optimizer.lr=0.1"], {"val/mse_hole": 0.05}),
            ("1", ["optimizer.lr=0.01"], {"val/mse_hole": 0.04}),
        ],
    )
    assert "sorted by val/mse_hole (min)" in report(sweep) and "| ★ | 1 |" in report(sweep)


def test_parallel_launcher_runs_jobs_in_their_own_processes_sharing_the_cores(tiny_mnist, tmp_path):
    command = [
        "dlcourse-train",
        "-m",
        "launcher=parallel",
        "optimizer.lr=0.01,0.1",
        *quick_overrides(tiny_mnist),
    ]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    jobs = sorted(
        p for p in only_run_folder(tmp_path / "outputs" / "multirun").iterdir() if p.is_dir()
    )
    assert [job.name for job in jobs] == ["0_optimizer.lr=0.01", "1_optimizer.lr=0.1"]
    pids = {next(job.glob("events.out.tfevents.*")).name.split(".")[-2] for job in jobs}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    for job in jobs:
        config = torch.load(job / "checkpoints" / "last.pt", weights_only=True)["config"]
        assert config["trainer"]["num_threads"] == max(1, (os.cpu_count() or 1) // 2)
    # Side by side, each job's console lines say whose they are; the sweep ends with a summary.
    output = result.stdout + result.stderr
    for number in (0, 1):
        epochs = [line for line in output.splitlines() if line.startswith(f"[job {number}][")]
        assert any("epoch 2/2" in line for line in epochs), output[-3000:]
    assert "Sweep finished: 2 job(s), best " in output and ", 0 failed, 0 pruned." in output


def test_submitit_job_requeued_into_its_folder_resumes_from_its_checkpoint(tiny_mnist, tmp_path):
    """What a SLURM requeue does (launcher=slurm sets resume=auto), with submitit's local executor:
    the same job runs again in the same folder and continues from checkpoints/last.pt."""
    common = [
        "-m",
        "hydra/launcher=submitit_local",
        "resume=auto",
        "hydra.sweep.dir=outputs/multirun/requeue",
        *quick_overrides(tiny_mnist),
    ]
    first = run_command(["dlcourse-train", *common, "trainer.epochs=1"], tmp_path, tiny_mnist)
    assert first.returncode == 0, first.stderr
    job = tmp_path / "outputs" / "multirun" / "requeue" / "0"
    assert json.loads((job / "metrics.json").read_text())["steps"] == 8
    again = run_command(["dlcourse-train", *common, "trainer.epochs=2"], tmp_path, tiny_mnist)
    assert again.returncode == 0, again.stderr
    assert (
        json.loads((job / "metrics.json").read_text())["steps"] == 16
    )  # epoch 2 only, not 1 again
    assert list((tmp_path / "outputs" / "multirun" / "requeue" / ".submitit").iterdir())
