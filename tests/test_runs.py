"""dlcourse-runs: a table of past runs, whatever became of them."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess

from helpers import STEPS_PER_EPOCH, call, compose_config, quick_overrides

from dlcourse.commands.runs import main
from dlcourse.run import train
from dlcourse.trainer import Trainer


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
        "[2026-01-01][dlcourse.train][ERROR] - error: MNIST is not in /x\n"
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


def test_a_run_stopped_with_ctrl_c_is_stopped_with_its_resume_command(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    """Not "failed (TrainingInterrupted: stopped by SIGINT)": train.log ends with a warning that
    it stopped, and the row says how to resume it, in a command that works as printed."""
    original = Trainer.train_step

    def train_step(self, batch):
        result = original(self, batch)
        if self.position.step + 1 == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    folder = tmp_path / "outputs" / "runs" / "stopped_by_ctrl_c"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", train_step)
        argv = [*quick_overrides(tiny_mnist), f"hydra.run.dir={folder}"]
        status, output = call("dlcourse-train", argv, patch, capsys)
    assert status == 130, output[-600:]
    assert "[WARNING] - stopped: stopped by SIGINT" in (folder / "train.log").read_text()
    monkeypatch.chdir(tmp_path)
    status, output = call("dlcourse-runs", ["outputs"], monkeypatch, capsys)
    assert " stopped " in output and "failed" not in output, output
    [hint] = [line for line in output.splitlines() if "resume with: " in line]
    command = shlex.split(hint.split("resume with: ", 1)[1])
    assert command == ["dlcourse-train", "resume=outputs/runs/stopped_by_ctrl_c"], hint
    status, output = call(command[0], command[1:], monkeypatch, capsys)
    assert status == 0, output[-600:]
    assert json.loads((folder / "metrics.json").read_text())["steps"] == 2 * STEPS_PER_EPOCH


def test_newest_first_holds_within_a_minute(tmp_path, capsys):
    """Runs started seconds apart, in the same minute, come newest first."""
    outputs = tmp_path / "outputs"
    minute = 1_800_000_000 - 1_800_000_000 % 60  # the start of a minute
    for name, second in (("older", 5), ("newest", 50), ("middle", 20)):
        record = outputs / "runs" / name / ".hydra"
        record.mkdir(parents=True)
        os.utime(record, (minute + second, minute + second))
    main([str(outputs), "--json"])
    names = [run["name"] for run in json.loads(capsys.readouterr().out)]
    assert names == ["runs/newest", "runs/middle", "runs/older"]
