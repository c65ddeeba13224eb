"""A run folder is never damaged, and nothing is written where no run lives.

Resume validates before writing, keeps the run's original record, applies (or refuses) its
overrides, never rolls state back; a lock keeps two processes out of one folder; a full disk is
one line; a stop prints a command that pastes safely; Ctrl-C never prints a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    BIN,
    STEPS_PER_EPOCH,
    compose_config,
    only_run_folder,
    quick_overrides,
    run_command,
)

from dlcourse.infrastructure.checkpoint import load_checkpoint, save_checkpoint
from dlcourse.infrastructure.errors import FinalTestInterrupted, UserError
from dlcourse.infrastructure.run_folder import FolderInUse, RunFolder
from dlcourse.resume import resume_config
from dlcourse.run import train
from dlcourse.trainer import Trainer


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes: a folder left as it was compares equal."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tiny_mnist, tmp_path_factory) -> Path:
    """A run folder written by the command line: 2 epochs, seed 11, constant learning rate."""
    cwd = tmp_path_factory.mktemp("finished")
    result = run_command(
        ["dlcourse-train", "seed=11", *quick_overrides(tiny_mnist)], cwd, tiny_mnist
    )
    assert result.returncode == 0, result.stderr
    return only_run_folder(cwd / "outputs" / "runs")


def test_resume_of_a_folder_that_holds_no_run_writes_nothing_anywhere(tiny_mnist, tmp_path):
    bystander = tmp_path / "documents"
    bystander.mkdir()
    (bystander / "notes.txt").write_text("mine\n")
    result = run_command(["dlcourse-train", f"resume={bystander}"], tmp_path, tiny_mnist)
    assert (
        result.returncode == 2
        and result.stderr
        == f"error: no checkpoint in run folder {bystander}: "
        f"expected {bystander}/checkpoints/last.pt\n"
    )
    assert snapshot(bystander) == {"notes.txt": b"mine\n"}
    assert not any((tmp_path / "outputs" / "runs").iterdir())  # no empty run folder left behind


def test_resume_of_a_file_of_another_run_leaves_that_run_untouched(
    finished_run, tiny_mnist, tmp_path
):
    before = snapshot(finished_run)
    result = run_command(
        ["dlcourse-train", f"resume={finished_run / 'metrics.json'}"], tmp_path, tiny_mnist
    )
    assert result.returncode == 2 and "not a PyTorch checkpoint" in result.stderr
    assert snapshot(finished_run) == before


def test_resume_keeps_the_original_record_and_applies_optimizer_overrides(
    finished_run, tiny_mnist, tmp_path
):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(finished_run), str(run_dir)], check=True)
    original = (run_dir / ".hydra" / "config.yaml").read_text()
    command = [
        "dlcourse-train",
        f"resume={run_dir}",
        "trainer.epochs=3",
        "optimizer.lr=0.5",
        "optimizer.momentum=0.5",
    ]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_text() == original  # still says seed 11
    assert "seed: 11" in original
    resumed = yaml.safe_load((run_dir / ".hydra" / "resume-1" / "overrides.yaml").read_text())
    assert resumed == [
        f"resume={run_dir}",
        "trainer.epochs=3",
        "optimizer.lr=0.5",
        "optimizer.momentum=0.5",
    ]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["config"]["optimizer"]["lr"] == 0.5
    assert [(g["lr"], g["momentum"]) for g in last["optimizer"]["param_groups"]] == [
        (0.5, 0.5)
    ]  # used, not just saved
    assert "Resumed with optimizer.lr=0.5 (was 0.01)" in (run_dir / "train.log").read_text()
    assert not (run_dir / ".lock").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.epochs=1"], "has trained 2 epochs: trainer.epochs=1 leaves nothing to train"),
        (
            ["trainer.epochs=2"],
            "trainer.epochs=2 leaves nothing to train. To train longer, pass trainer.epochs=3",
        ),
        (
            ["model.num_classes=5"],
            "'model.num_classes=5' would change what the stopped run was training",
        ),
        (["seed=3"], "'seed=3' would change what the stopped run was training"),
        (["model=cnn"], "'model=cnn' cannot change a resumed run's components"),
    ],
)
def test_resumes_that_would_destroy_or_redefine_state_are_refused(
    overrides, message, finished_run, tiny_mnist
):
    cfg = compose_config(quick_overrides(tiny_mnist))
    cfg.resume = str(finished_run)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resume_config(cfg, [f"resume={finished_run}", *overrides])


def test_resume_from_best_is_refused_when_the_run_went_further(finished_run, tiny_mnist):
    best = load_checkpoint(finished_run / "checkpoints" / "best.pt")
    last = load_checkpoint(finished_run / "checkpoints" / "last.pt")
    assert best["step"] < last["step"], "the fixture's best epoch should be its first"
    cfg = compose_config(quick_overrides(tiny_mnist))
    cfg.resume = str(finished_run / "checkpoints" / "best.pt")
    with pytest.raises(UserError, match="is older than .*last.pt of the same run"):
        resume_config(cfg, ["trainer.epochs=5"])


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_fixed_length_schedules_refuse_a_new_length_and_a_new_learning_rate(
    scheduler, tiny_mnist, tmp_path
):
    cfg = compose_config(
        [*quick_overrides(tiny_mnist), f"scheduler={scheduler}", "trainer.epochs=1"]
    )
    train(cfg, tmp_path)
    cfg.resume = str(tmp_path)
    with pytest.raises(UserError, match=f"scheduler={scheduler} fixed the run's length"):
        resume_config(cfg, ["trainer.epochs=3"])
    with pytest.raises(UserError, match="the run's scheduler sets its learning rate"):
        resume_config(cfg, ["trainer.epochs=1", "optimizer.lr=0.5"])


# --- one process per folder ----------------------------------------------------------------------


def test_a_live_lock_refuses_a_second_process_and_a_stale_one_is_taken_over(
    finished_run, tiny_mnist, tmp_path
):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(finished_run), str(run_dir)], check=True)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (run_dir / ".lock").write_text(
            json.dumps({"pid": holder.pid, "host": os.uname().nodename, "slurm_job": None})
        )
        before = snapshot(run_dir)
        result = run_command(
            ["dlcourse-train", f"resume={run_dir}", "trainer.epochs=3"], tmp_path, tiny_mnist
        )
        assert result.returncode == 2
        assert (
            result.stderr
            == f"error: {run_dir} is in use by process {holder.pid} on {os.uname().nodename}; wait "
            f"for it to finish (if that process is gone, delete {run_dir / '.lock'})\n"
        )
        assert snapshot(run_dir) == before
    finally:
        holder.kill()
        holder.wait()
    with RunFolder(run_dir, resuming=True):  # the holder is gone: its lock is stale
        assert json.loads((run_dir / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(FolderInUse, match="is in use by process"):
            RunFolder(run_dir, resuming=True).__enter__()  # one folder, one claim
    assert not (run_dir / ".lock").exists()


def test_a_new_run_is_refused_in_a_folder_that_holds_a_run(finished_run, tiny_mnist, tmp_path):
    before = snapshot(finished_run)
    result = run_command(["dlcourse-train", f"hydra.run.dir={finished_run}"], tmp_path, tiny_mnist)
    assert (
        result.returncode == 2
        and f"{finished_run} already holds a run; continue it with" in result.stderr
    )
    assert snapshot(finished_run) == before


def test_what_an_attempt_left_before_its_first_checkpoint_may_be_written_over(tmp_path):
    """A job stopped before its first checkpoint (preempted during the first validation) left its
    record, log, TensorBoard events (some in sub-runs), its other loggers' files and a profile: its
    next attempt reuses the folder.
    Anything else in a sub-run's place is someone's files."""
    from dlcourse.infrastructure.run_folder import check_free

    folder = tmp_path / "job"
    for name in (
        ".hydra/config.yaml",
        "train.log",
        "events.out.tfevents.1.host.1.0",
        "train/events.out.tfevents.2.host.1.0",
        "val/events.out.tfevents.3.host.1.0",
        "metrics.csv",  # logger=csv's first rows
        "mlflow.json",  # logger=mlflow's run
        "profile/host_1.123.pt.trace.json",  # debug=profiler's trace
    ):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("")
    check_free(folder)  # no error: the attempt's own
    (folder / "val" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds files that are not this run's"):
        check_free(folder)


# --- full disk, quoting, signals ------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}, "step": 1}, path)

    def no_space(descriptor):  # where a full disk often shows first: flushing to the device
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(
        os, "fsync", no_space
    )  # dlcourse.infrastructure.files flushes every file it writes
    with pytest.raises(
        UserError,
        match=f"no space left on the device to write {path}; the last good checkpoint "
        f"is {path}, as it was before",
    ):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "config": {}, "step": 2}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no stale .last.pt.tmp
    assert load_checkpoint(path)["step"] == 1


def test_a_full_disk_during_a_real_run_stops_it_in_one_line(tiny_mnist, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        command = [
            "dlcourse-train",
            "model=mlp",
            "model.hidden_sizes=[100]",
            f"paths.output_dir={small}",
            *quick_overrides(tiny_mnist),
        ]
        result = run_command(command, tmp_path, tiny_mnist)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        # Whichever write meets the full disk first (a checkpoint, events, the record) says so.
        assert (
            result.stderr.startswith("error: no space left on the device")
            and result.stderr.count("\n") == 1
        )
        assert not list(small.rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(small)], check=False)


def start(command: list[str], cwd: Path, data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "DLCOURSE_DATA_DIR": str(data_dir)}
    return subprocess.Popen(
        [str(BIN / command[0]), *command[1:]],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_the_printed_resume_command_pastes_safely_into_a_shell(tiny_mnist, tmp_path):
    folder = "outputs/my run $(touch pwned) it's"
    hydra_value = "'outputs/my run $(touch pwned) it\\'s'"
    process = start(
        [
            "dlcourse-train",
            f"hydra.run.dir={hydra_value}",
            *quick_overrides(tiny_mnist),
            "trainer.epochs=100000",
        ],
        tmp_path,
        tiny_mnist,
    )
    deadline = time.monotonic() + 120
    while (
        not (tmp_path / folder / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    lines = output.splitlines()
    command = lines[
        lines.index(next(line for line in lines if line.endswith("Resume with:"))) + 1
    ].strip()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DLCOURSE_DATA_DIR": str(tiny_mnist),
    }
    stopped_at = load_checkpoint(tmp_path / folder / "checkpoints" / "last.pt")["epoch"]
    result = subprocess.run(
        ["bash", "-c", f"{command} trainer.epochs={stopped_at}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / folder / "metrics.json").is_file() and (
        tmp_path / folder / ".hydra" / "resume-1"
    ).is_dir()


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5])
def test_ctrl_c_during_start_up_exits_quietly(delay, tiny_mnist, tmp_path):
    process = start(["dlcourse-train", *quick_overrides(tiny_mnist)], tmp_path, tiny_mnist)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    # 0, or ended by the signal as Python exits (-2): the tiny run had already finished.
    finished = "Run folder:" in output
    assert process.returncode == 130 or (finished and process.returncode in (0, -2)), output
    assert "Traceback" not in output


def test_ctrl_c_while_the_final_test_loads_best_pt_is_a_stop_not_a_damaged_file(
    tiny_mnist, tmp_path, monkeypatch
):
    """The signal can land inside torch.load of best.pt (a fresh CI run met it at 2.5 s): the
    reader of damaged files must let the stop through, so the run exits 130 with its hint."""
    from dlcourse.infrastructure import checkpoint

    original = torch.load

    def load(path, *args, **kwargs):
        if Path(getattr(path, "name", str(path))).name == "best.pt":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs inside this load, as it did in that run
        return original(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "load", load)
    with pytest.raises(FinalTestInterrupted, match="during the final test"):
        train(compose_config(quick_overrides(tiny_mnist)), tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_ctrl_c_during_the_final_test_stops_at_once_without_claiming_to_save(
    tiny_mnist, tmp_path, monkeypatch
):
    original = Trainer.evaluate

    def evaluate(self, batches, split, *review):
        if split == "test":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here and ends the test
        return original(self, batches, split, *review)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    with pytest.raises(
        FinalTestInterrupted, match="during the final test.*trained weights are in .*best.pt"
    ):
        train(compose_config(quick_overrides(tiny_mnist)), tmp_path)
    assert not (tmp_path / "metrics.json").exists()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2 * STEPS_PER_EPOCH


def test_ctrl_c_to_a_parallel_sweep_saves_every_running_job(tiny_mnist, tmp_path):
    command = [
        "dlcourse-train",
        "-m",
        "launcher=parallel",
        "optimizer.lr=0.01,0.02,0.03",
        *quick_overrides(tiny_mnist),
        "trainer.epochs=100000",
    ]
    process = start(command, tmp_path, tiny_mnist)
    deadline = time.monotonic() + 120
    while (
        len(list(tmp_path.glob("outputs/multirun/*/*/checkpoints/last.pt"))) < 2
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    time.sleep(0.5)  # mid-epoch
    process.send_signal(signal.SIGINT)  # to the sweep's own process only, as `kill -INT` does
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    sweep = only_run_folder(tmp_path / "outputs" / "multirun")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [job.name.split("_")[0] for job in jobs] == ["0", "1"]  # job 2 never started
    for job in jobs:
        # Each job saved and said how to resume, quoted for Hydra and the shell (its name has =).
        assert f"\"resume='{job.relative_to(tmp_path)}'\"" in output
        assert not (job / ".lock").exists() and not list(job.rglob(".*.tmp"))
    # The sweep's last word lists each saved job's command again, ready to paste.
    summary = output.split("Sweep stopped (2 job(s) saved); continue a job with:\n", 1)[1]
    assert summary.splitlines()[:2] == [
        f"  dlcourse-train \"resume='{job.relative_to(tmp_path)}'\"" for job in jobs
    ], output
    assert "Traceback" not in output


def test_a_run_folder_is_named_by_what_ran_and_what_its_command_line_changed(tiny_mnist, tmp_path):
    """Three runs of one model tell themselves apart (in TensorBoard's run list too); where the
    data lies is left out of the name, and the printed folder is taken back as printed."""
    command = ["dlcourse-train", "model=linear", "optimizer.lr=0.05", "model.zero_init=true"]
    result = run_command([*command, *quick_overrides(tiny_mnist)], tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr[-2000:]
    name = only_run_folder(tmp_path / "outputs" / "runs").name
    # The settings in order, the data folder left out, and those past 60 characters too.
    assert re.fullmatch(
        r"[0-9_-]{19}_linear_optimizer.lr=0.05_model.zero_init=true_[0-9a-f]{6}", name
    )
    assert len(f"outputs/runs/{name}") <= 100  # dlcourse-runs prints it whole in 100 columns
    evaluate = ["dlcourse-eval", f"ckpt_path=outputs/runs/{name}", f"data_dir={tiny_mnist}"]
    assert run_command(evaluate, tmp_path, tiny_mnist).returncode == 0
