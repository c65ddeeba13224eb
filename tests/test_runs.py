"""dlcourse-runs: a table of past runs, whatever became of them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from helpers import compose_config, quick_overrides

from dlcourse.commands.runs import main
from dlcourse.run import train


def test_runs_lists_finished_stopped_failed_and_running_runs(tiny_mnist, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    finished = outputs / "runs" / "2026-01-01_00-00-00_linear_aaaaaa"
    train(compose_config(quick_overrides(tiny_mnist)), finished)
    stopped = outputs / "runs" / "stopped"
    shutil.copytree(finished, stopped)
    (stopped / "metrics.json").unlink()  # a checkpoint and no results: stopped part-way
    failed = outputs / "runs" / "failed"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "train.log").write_text(
        "[2026-01-01][dlcourse.commands.train][ERROR] - error: MNIST is not in /x\n"
    )
    running = outputs / "multirun" / "sweep" / "0_optimizer.lr=0.1"
    (running / ".hydra").mkdir(parents=True)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = {"pid": holder.pid, "host": os.uname().nodename, "slurm_job": None}
        (running / ".lock").write_text(json.dumps(lock))
        main([str(outputs), "--json", "--sort", "name"])
    finally:
        holder.kill()
        holder.wait()
    runs = {run["name"]: run for run in json.loads(capsys.readouterr().out)}
    assert {name: run["status"] for name, run in runs.items()} == {
        "runs/2026-01-01_00-00-00_linear_aaaaaa": "finished",
        "runs/stopped": "stopped",
        "runs/failed": "failed",
        "multirun/sweep/0_optimizer.lr=0.1": "running",
    }
    done = runs["runs/2026-01-01_00-00-00_linear_aaaaaa"]
    metrics = json.loads((finished / "metrics.json").read_text())
    assert (
        done["monitor"] == "val/acc" and done["test"] == metrics["test/acc"] and done["epochs"] == 2
    )
    assert runs["runs/failed"]["error"] == "MNIST is not in /x"
    main([str(outputs)])
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("run ") and "test/acc=" in table and "stopped" in table
