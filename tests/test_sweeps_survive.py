"""Sweeps and studies survive kills, cut files and each other (issue 24, point 5).

Each fault is a class, and each test builds a corpus of its cases: cuts at many byte offsets of
a real journal's last line, journals damaged in the middle, stale and live locks of a study,
odd files of every kind in every file of a job folder, text that a spreadsheet, a Markdown
viewer or a terminal would take for code. Every command that could touch a case runs on it:
a rerun of the search, dlcourse-sweep-report and dlcourse-runs. The real-process tests
(kill -9 of a parallel search, two searches at once) are few and small."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from helpers import BIN, STEPS_PER_EPOCH, call, quick_overrides, run_command
from optuna.storages.journal import JournalFileBackend, JournalStorage

from dlcourse.infrastructure import locks
from dlcourse.infrastructure.interrupt import descendants
from dlcourse.infrastructure.run_folder import FAILED, JOURNAL, LOCK
from dlcourse.sweeps.search import repair_journal

STUDY = "mnist_mlp"  # hparams_search=mnist_optuna's study


def search_argv(data: Path, sweep_dir: Path, trials: int = 3, epochs: int = 1) -> list[str]:
    """A small search of hparams_search=mnist_optuna in `sweep_dir` (the arguments of
    dlcourse-train)."""
    return [
        "hparams_search=mnist_optuna",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweep.dir={sweep_dir}",
        *quick_overrides(data),
        f"trainer.epochs={epochs}",
        "trainer.progress_bar=false",
    ]


def trials_of(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL)))
    return optuna.load_study(study_name=STUDY, storage=storage).trials


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def study(tiny_mnist, tmp_path_factory) -> Path:
    """A real search's folder: three finished trials of one epoch, and their journal."""
    root = tmp_path_factory.mktemp("study")
    sweep_dir = root / "search"
    result = run_command(["dlcourse-train", *search_argv(tiny_mnist, sweep_dir)], root, tiny_mnist)
    assert result.returncode == 0, result.stderr
    assert [t.state.name for t in trials_of(sweep_dir)] == ["COMPLETE"] * 3
    return sweep_dir


def copy_of(study: Path, tmp_path: Path, name: str = "search") -> Path:
    copy = tmp_path / name
    shutil.copytree(study, copy, symlinks=True)
    (copy / "optimization_results.yaml").unlink()
    return copy


def job_values(sweep_dir: Path) -> dict[int, float]:
    """Each finished job's val/acc, by trial number, from its own metrics.json."""
    values = {}
    for metrics in sweep_dir.glob("*/metrics.json"):
        values[int(metrics.parent.name.split("_")[0])] = json.loads(metrics.read_text())["val/acc"]
    return values


# --- 1. A journal cut short, or damaged in the middle ---------------------------------------


def test_every_cut_of_the_journals_last_line_is_repaired(study, tmp_path):
    """A kill or a full disk may stop Optuna's write of a line at any byte: each cut is cut
    away (and kept), or completed when only its line end is missing; every line before it is
    kept byte for byte, and Optuna reads the study again."""
    data = (study / JOURNAL).read_bytes()
    body = data[: data.rstrip(b"\n").rfind(b"\n") + 1]
    last = data[len(body) :]
    for offset in range(1, len(last)):  # every cut of the last line (its \n is byte len-1)
        folder = tmp_path / f"cut{offset}"
        folder.mkdir()
        (folder / JOURNAL).write_bytes(body + last[:offset])
        repair_journal(folder / JOURNAL)
        repaired = (folder / JOURNAL).read_bytes()
        torn = list(folder.glob(f"{JOURNAL}.torn-*"))
        if offset == len(last) - 1:  # whole JSON without its line end: completed
            assert repaired == data and not torn, offset
        else:
            assert repaired == body, offset
            assert [p.read_bytes() for p in torn] == [last[:offset]], offset
        trials = trials_of(folder)
        assert len(trials) == 3 and [t.state.name for t in trials[:2]] == ["COMPLETE"] * 2
    assert len(last) > 100  # the corpus: one case per byte of a real record


def test_a_cut_journal_is_repaired_by_the_rerun_and_read_by_every_command(
    study, tiny_mnist, tmp_path, monkeypatch, capsys
):
    """Cuts at byte offsets spread over the last line, through each command: the report and
    dlcourse-runs read the cut journal as it is; the rerun repairs it (one warning line),
    adopts trial 2's result from its metrics.json (its COMPLETE was the line cut) and ends
    with the study whole: three trials, each with the value its job wrote."""
    data = (study / JOURNAL).read_bytes()
    body = data[: data.rstrip(b"\n").rfind(b"\n") + 1]
    last = data[len(body) :]
    expected = job_values(study)
    offsets = sorted({1, len(last) // 2, len(last) - 2, len(last) - 1, *range(7, len(last), 12)})
    for offset in offsets:
        sweep_dir = copy_of(study, tmp_path, f"cut{offset}")
        (sweep_dir / JOURNAL).write_bytes(body + last[:offset])
        status, output = call("dlcourse-sweep-report", [str(sweep_dir)], monkeypatch, capsys)
        assert status == 0 and "Traceback" not in output, (offset, output[-800:])
        assert "## Optuna study" in output and "could not be read" not in output, offset
        status, output = call("dlcourse-runs", [str(sweep_dir)], monkeypatch, capsys)
        assert status == 0 and output.count("finished") == 3, (offset, output)
        status, output = call(
            "dlcourse-train", search_argv(tiny_mnist, sweep_dir), monkeypatch, capsys
        )
        assert status == 0 and "Traceback" not in output, (offset, output[-2000:])
        assert (output.count("ended in a line cut short") == 1) == (offset < len(last) - 1)
        trials = trials_of(sweep_dir)
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3, offset
        assert {t.number: t.value for t in trials} == expected, offset
        assert yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())[
            "best_value"
        ] == max(expected.values())
    assert len(offsets) >= 6


def damaged_lines() -> dict[str, bytes]:
    """What a journal line may hold in place of an Optuna record."""
    return {
        "not JSON": b"this is no record",
        "not UTF-8": b'{"op_code": 4, "name": "\xff\xfe"}',
        "nested 5000 deep": b"[" * 5000 + b"]" * 5000,
        "a JSON list": b"[1, 2, 3]",
        "no op_code": b'{"worker_id": "w"}',
        "a text op_code": b'{"op_code": "x"}',
        "empty": b"",
        "two records run together": b'{"op_code": 7, "worker_id": "w", "tri{"op_code": 6}',
    }


def test_a_journal_damaged_before_its_last_line_is_refused_and_still_reported(
    study, tiny_mnist, tmp_path, monkeypatch, capsys
):
    """Every kind of damaged line at the first, a middle and the second-to-last line: the
    rerun refuses in one line naming the file and the line, and changes nothing; the report
    shows the job folders' table and names the journal it could not read."""
    lines = (study / JOURNAL).read_bytes().split(b"\n")[:-1]
    cases = [
        (kind, position, bad)
        for kind, bad in damaged_lines().items()
        for position in (0, len(lines) // 2, len(lines) - 2)
    ]
    for kind, position, bad in cases:
        sweep_dir = copy_of(study, tmp_path, f"damaged{len(list(tmp_path.iterdir()))}")
        damaged = b"\n".join([*lines[:position], bad, *lines[position + 1 :]]) + b"\n"
        (sweep_dir / JOURNAL).write_bytes(damaged)
        status, output = call(
            "dlcourse-train", search_argv(tiny_mnist, sweep_dir), monkeypatch, capsys
        )
        assert status == 2 and "Traceback" not in output, (kind, position, output[-1500:])
        assert error_lines(output) == [error_lines(output)[0]], (kind, output[-1500:])
        assert f"{sweep_dir / JOURNAL} is damaged at line {position + 1} of" in output, kind
        assert (sweep_dir / JOURNAL).read_bytes() == damaged, kind
        assert not (sweep_dir / "optimization_results.yaml").exists()
        status, output = call("dlcourse-sweep-report", [str(sweep_dir)], monkeypatch, capsys)
        assert status == 0 and "Traceback" not in output, (kind, output[-800:])
        assert "3 done, 0 failed" in output and f"- {JOURNAL} could not be read" in output, kind
        status, output = call("dlcourse-runs", [str(sweep_dir)], monkeypatch, capsys)
        assert status == 0 and output.count("finished") == 3, (kind, output)
    assert len(cases) == 24


def test_a_journal_optuna_cannot_replay_is_refused_in_one_line(
    study, tiny_mnist, tmp_path, monkeypatch, capsys
):
    """Records that are well-formed JSON but that Optuna's replay rejects (an unknown
    op_code, an op without its trial)."""
    lines = (study / JOURNAL).read_bytes().split(b"\n")[:-1]
    for number, bad in enumerate([b'{"op_code": 99}', b'{"op_code": 5, "worker_id": "w"}']):
        sweep_dir = copy_of(study, tmp_path, f"replay{number}")
        (sweep_dir / JOURNAL).write_bytes(b"\n".join([*lines[:4], bad, *lines[4:]]) + b"\n")
        status, output = call(
            "dlcourse-train", search_argv(tiny_mnist, sweep_dir), monkeypatch, capsys
        )
        assert status == 2 and "Traceback" not in output, output[-1500:]
        assert len(error_lines(output)) == 1
        assert f"cannot open study {STUDY} in {sweep_dir / JOURNAL}" in output
        status, output = call("dlcourse-sweep-report", [str(sweep_dir)], monkeypatch, capsys)
        assert status == 0 and f"- {JOURNAL} could not be read" in output, output[-800:]


# --- 2. A killed search: its workers end, a rerun adopts and resumes -------------------------


def test_a_rerun_adopts_finished_trials_resumes_stopped_ones_and_replaces_lost_ones(
    study, tiny_mnist, tmp_path, monkeypatch, capsys
):
    """The study as a killed search leaves it: every trial still RUNNING. Trial 0's job had
    finished (metrics.json): its value is adopted, it does not run again. Trial 1's had only
    its checkpoint: it resumes in its own folder (a second epoch, as trainer.epochs=2 asks).
    Trial 2's folder is gone: it is marked interrupted and trial 3 replaces it."""
    sweep_dir = copy_of(study, tmp_path)
    lines = (sweep_dir / JOURNAL).read_bytes().split(b"\n")[:-1]
    (sweep_dir / JOURNAL).write_bytes(
        b"".join(line + b"\n" for line in lines if json.loads(line)["op_code"] != 6)
    )
    assert [t.state.name for t in trials_of(sweep_dir)] == ["RUNNING"] * 3
    first = {int(p.name.split("_")[0]): p for p in sweep_dir.iterdir() if p.name[0].isdigit()}
    adopted_value = json.loads((first[0] / "metrics.json").read_text())["val/acc"]
    (first[1] / "metrics.json").unlink()
    shutil.rmtree(first[2])

    argv = search_argv(tiny_mnist, sweep_dir, trials=3, epochs=2)
    status, output = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 0 and "Traceback" not in output, output[-3000:]
    trials = trials_of(sweep_dir)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials[0].value == adopted_value and trials[2].user_attrs == {"interrupted": True}
    assert "Resuming trial(s) [1] from their checkpoints" in output
    assert not (first[0] / ".hydra" / "resume-1").exists()  # adopted: not run again
    assert (first[1] / ".hydra" / "resume-1").is_dir()
    resumed = json.loads((first[1] / "metrics.json").read_text())
    assert resumed["steps"] == 2 * STEPS_PER_EPOCH and trials[1].value == resumed["val/acc"]
    assert sorted(p.name.split("_")[0] for p in sweep_dir.iterdir() if p.name[0].isdigit()) == [
        "0",
        "1",
        "3",
    ]


def process_runs(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def start_search(argv: list[str], cwd: Path, data: Path, log: Path) -> subprocess.Popen:
    """dlcourse-train in a session of its own (so that a signal to it reaches it alone), its
    output in a file (a pipe would die with it, and its workers write there too)."""
    env = {**os.environ, "DLCOURSE_DATA_DIR": str(data)}
    with open(log, "w") as output:
        return subprocess.Popen(
            [str(BIN / "dlcourse-train"), *argv],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_kill_9_of_a_parallel_search_ends_its_workers_and_a_rerun_resumes_them(
    tiny_mnist, tmp_path
):
    sweep_dir = tmp_path / "search"
    argv = [
        *search_argv(tiny_mnist, sweep_dir, trials=2, epochs=100000),
        "launcher=parallel",
        "hydra.sweeper.n_jobs=2",
    ]
    search = start_search(argv, tmp_path, tiny_mnist, tmp_path / "first.log")
    workers: set[int] = set()
    try:
        checkpoints = lambda: list(sweep_dir.glob("*/checkpoints/last.pt"))  # noqa: E731
        wait_for(lambda: len(checkpoints()) == 2, 120, "both jobs' first checkpoint")
        workers = descendants(search.pid)
        os.kill(search.pid, signal.SIGKILL)  # the sweep's process only, as kill -9 does
        search.wait(timeout=10)
        killed = time.monotonic()
        wait_for(lambda: not any(process_runs(pid) for pid in workers), 15, "the workers to end")
        print(f"the workers ended {time.monotonic() - killed:.1f} s after the kill")
    finally:
        for pid in [search.pid, *workers]:  # none is left behind, whatever failed above
            if process_runs(pid):
                os.kill(pid, signal.SIGKILL)
    log = (tmp_path / "first.log").read_text()
    assert log.count("The sweep's process") == 2 and "Traceback" not in log, log[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert len(jobs) == 2 and not any((job / "metrics.json").exists() for job in jobs)
    assert not any((job / LOCK).exists() for job in jobs)  # each saved, then let go
    epochs = [
        torch.load(job / "checkpoints" / "last.pt", weights_only=True)["epoch"] for job in jobs
    ]

    argv[argv.index("trainer.epochs=100000")] = f"trainer.epochs={max(epochs) + 1}"
    again = run_command(["dlcourse-train", *argv], tmp_path, tiny_mnist)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]
    output = again.stdout + again.stderr
    assert "Taking over" in output and "Resuming trial(s) [0, 1]" in output
    assert [t.state.name for t in trials_of(sweep_dir)] == ["COMPLETE", "COMPLETE"]
    for job in jobs:
        assert (job / ".hydra" / "resume-1").is_dir()  # continued in its folder, not restarted
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["steps"] == (max(epochs) + 1) * STEPS_PER_EPOCH
    assert sorted(p for p in sweep_dir.iterdir() if p.is_dir()) == jobs


# --- 3. Two searches of one study ----------------------------------------------------------


def test_a_second_search_of_a_running_study_is_refused_in_one_line(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    sweep_dir = tmp_path / "search"
    argv = search_argv(tiny_mnist, sweep_dir, trials=2, epochs=100000)
    first = start_search(argv, tmp_path, tiny_mnist, tmp_path / "first.log")
    try:
        wait_for(lambda: list(sweep_dir.glob("*/checkpoints/last.pt")), 120, "a checkpoint")
        holder = json.loads((sweep_dir / LOCK).read_text())
        assert holder["pid"] == first.pid and holder["started"] == locks.process_start_time(
            first.pid
        )
        status, output = call("dlcourse-train", argv, monkeypatch, capsys)
        assert status == 2 and "Traceback" not in output, output[-2000:]
        assert error_lines(output) == [
            f"error: {sweep_dir} is in use by another search (process {first.pid} on "
            f"{socket.gethostname()}); wait for it to finish, or give this one its own "
            f"hydra.sweep.dir (if that process is gone, delete {sweep_dir / LOCK})"
        ]
        assert [t.state.name for t in trials_of(sweep_dir)] == ["RUNNING"]  # left alone
        first.send_signal(signal.SIGINT)  # the first one goes on as if nothing happened
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            first.kill()
    log = (tmp_path / "first.log").read_text()
    assert "Traceback" not in log and "Cannot tell" not in log, log[-2000:]
    assert not (sweep_dir / LOCK).exists()  # let go as it ended


def stale_locks(tmp_path: Path) -> dict[str, object]:
    """Locks a gone search may leave, and files that only look like locks: each is taken over."""
    me = locks.this_process()
    ended = subprocess.Popen(["true"])
    ended.wait()
    return {
        "its process has ended": {**me, "pid": ended.pid, "started": 1},
        "its pid now names another process": {**me, "started": me["started"] + 1},
        "a pid beyond 64 bits": {**me, "pid": 2**70},
        "pid -1": {**me, "pid": -1},
        "pid 0": {**me, "pid": 0},
        "pid 1 (init)": {**me, "pid": 1},
        "a text pid": {**me, "pid": "12ab"},
        "a float pid": {**me, "pid": 1.5},
        "no pid": {"host": me["host"]},
        "unreadable": b"\xff\x00 not json",
        "a JSON list": [1, 2],
        "empty": b"",
    }


def live_locks(tmp_path: Path) -> dict[str, object]:
    """Locks whose holder may be running: each refuses the search."""
    me = locks.this_process()
    return {
        "a live process": me,  # this very test process
        "another host": {**me, "host": "elsewhere.example", "pid": 12345},
        "being written (unreadable, fresh)": b"{",
        "a symbolic link to /dev/zero": Path("/dev/zero"),
        "a folder": "folder",
    }


def plant_lock(path: Path, lock: object, stale: bool) -> None:
    """`lock` at `path`; a stale one an hour old (an unreadable lock is in use while fresh)."""
    if isinstance(lock, Path):
        path.symlink_to(lock)
    elif lock == "folder":
        path.mkdir()
    else:
        path.write_bytes(lock if isinstance(lock, bytes) else json.dumps(lock).encode())
    if stale:
        old = time.time() - 3600
        os.utime(path, (old, old))


def test_stale_locks_are_taken_over_and_live_ones_refuse_the_search(
    study, tiny_mnist, tmp_path, monkeypatch, capsys
):
    """The sweep folder's lock in every state a file can be in: stale ones (a gone process, a
    reused pid, pids no process has) are taken over and released at the end; live or
    unreadable-but-fresh ones, and things that are no lock, refuse the rerun in one line and
    change nothing."""
    cases = [(kind, lock, True) for kind, lock in stale_locks(tmp_path).items()]
    cases += [(kind, lock, False) for kind, lock in live_locks(tmp_path).items()]
    for number, (kind, lock, stale) in enumerate(cases):
        sweep_dir = copy_of(study, tmp_path, f"lock{number}")
        plant_lock(sweep_dir / LOCK, lock, stale)
        journal = (sweep_dir / JOURNAL).read_bytes()
        argv = search_argv(tiny_mnist, sweep_dir)
        status, output = call("dlcourse-train", argv, monkeypatch, capsys)
        assert "Traceback" not in output, (kind, output[-2000:])
        if stale:
            assert status == 0 and "Taking over" in output, (kind, output[-2000:])
            assert not os.path.lexists(sweep_dir / LOCK), kind
            assert (sweep_dir / "optimization_results.yaml").is_file(), kind
        else:
            assert status == 2 and len(error_lines(output)) == 1, (kind, output[-2000:])
            assert str(sweep_dir) in error_lines(output)[0], kind
            assert (sweep_dir / JOURNAL).read_bytes() == journal, kind
            assert not (sweep_dir / "optimization_results.yaml").exists(), kind
        status, output = call("dlcourse-runs", [str(sweep_dir)], monkeypatch, capsys)
        assert status == 0 and output.count("finished") == 3, (kind, output)
    assert len(cases) == 17


# --- 4. Odd files in job folders: every command reports what it can ------------------------

JOB_FILES = (".hydra/overrides.yaml", ".hydra/hydra.yaml", "metrics.json", FAILED, ".lock")
JOB_FILES += ("train.log",)
READ_BY_THE_REPORT = (".hydra/overrides.yaml", "metrics.json", FAILED)
UNREADABLE = {  # what any file may hold instead of itself
    "not UTF-8": lambda whole: b"\xff\xfe\x80 " + whole[:20],
    "cut in half": lambda whole: whole[: len(whole) // 2],
    "empty": lambda whole: b"",
    "nested 5000 deep": lambda whole: b"[" * 5000,
    "a number, not a mapping": lambda whole: b"42",
    "a Python tag": lambda whole: b"- !!python/object/apply:os.system ['touch pwned']\n",
}
NO_FILE = ("a folder", "a link to /dev/zero", "a FIFO", "17 MB")  # what may stand in its place
# Values of metrics.json that leave a job's val/acc, or which way is better, unknown.
UNUSABLE_METRICS = (
    "val/acc is text",
    "val/acc is a list",
    "val/acc has 401 digits",
    "val/acc is true",
    "higher_is_better is a list",
    "higher_is_better holds text",
    "monitor is a list",
)


def odd_values() -> list[tuple[str, str, object]]:
    """(file, kind, a change to the whole file's data): values of the wrong type or size."""
    metric = {
        "val/acc is text": {"val/acc": "0.9"},
        "val/acc is a list": {"val/acc": [0.9]},
        "val/acc has 401 digits": {"val/acc": 10**400},
        "val/acc is true": {"val/acc": True},
        "val/acc is NaN": {"val/acc": float("nan")},
        "higher_is_better is a list": {"higher_is_better": [True]},
        "higher_is_better holds text": {"higher_is_better": {"acc": "yes"}},
        "monitor is a list": {"monitor": ["val/acc"]},
        "a metric named with a new line and HTML": {"val/a\n## <b>x</b>|": 0.5},
        "epochs_run is text": {"epochs_run": "two"},
    }
    failure = {
        "error is a mapping": {"error": {"a": 1}},
        "error is a list": {"error": ["x"]},
        "error spans lines, with HTML": {"error": "line 1\n## <script>x</script> | y"},
        "no error": {"error": None},
    }
    pid = {
        "pid beyond 64 bits": {"pid": 2**70},
        "pid -1": {"pid": -1},
        "pid 0": {"pid": 0},
        "pid is text": {"pid": "abc"},
        "another host": {"host": "elsewhere.example"},
    }
    record = {
        "hydra is a list": "hydra: [1, 2]\n",
        "choices is a list": "hydra: {runtime: {choices: [1]}, overrides: {task: []}}\n",
        "task is a string": "hydra: {runtime: {choices: {}}, overrides: {task: abc}}\n",
        "experiment is a mapping": "hydra: {runtime: {choices: {experiment: {a: 1}}}}\n",
        "aliases nested 9 deep (2^27 strings)": alias_bomb(),
    }
    overrides = {
        "not strings": "- 1\n- [2]\n",
        "no = in an entry": "- optimizer.lr\n",
        "a mapping": "a: 1\n",
    }
    log = {"an error line with terminal codes": b"[x][ERROR] - error: \x1b[2J\x07gone\n"}
    return (
        [("metrics.json", kind, change) for kind, change in metric.items()]
        + [(FAILED, kind, change) for kind, change in failure.items()]
        + [(".lock", kind, change) for kind, change in pid.items()]
        + [(".hydra/hydra.yaml", kind, text.encode()) for kind, text in record.items()]
        + [(".hydra/overrides.yaml", kind, text.encode()) for kind, text in overrides.items()]
        + [("train.log", kind, data) for kind, data in log.items()]
    )


def alias_bomb() -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 10)]
    return (
        "\n".join(lines)
        + "\nhydra: {runtime: {choices: {experiment: *a9}}, "
        + ("overrides: {task: *a9}}\n")
    )


def odd_names() -> list[bytes]:
    """Job folder names from elsewhere (a copied sweep, a hand-made folder)."""
    return [
        "²_x".encode(),
        b"3_a\nb",
        b"4_\x1b[31mred",
        b"5_\xff\xfe",
        b"6_<b>|x",
        b"=1+2",
        b"-2",
        b"7_" + b"x" * 200,
    ]


@pytest.fixture(scope="module")
def job_files(study) -> dict[str, dict[str, bytes]]:
    """The whole files of two real job folders (a failed.json and a lock of a gone process
    added), which the corpus spoils one at a time."""
    jobs = sorted(p for p in study.iterdir() if p.name[0].isdigit())[:2]
    files = []
    ended = subprocess.Popen(["true"])
    ended.wait()
    for job in jobs:
        whole = {name: (job / name).read_bytes() for name in JOB_FILES if (job / name).is_file()}
        failure = {"error": "the loss became nan", "type": "UserError", "overrides": []}
        whole[FAILED] = json.dumps(failure).encode()
        whole[".lock"] = json.dumps({**locks.this_process(), "pid": ended.pid}).encode()
        files.append(whole)
    return {"good": files[0], "odd": files[1]}


def write_job(folder: Path, files: dict[str, bytes], failed: bool) -> None:
    for name, data in files.items():
        if name == (FAILED if not failed else "metrics.json"):
            continue  # a finished job has no failed.json, a failed one no metrics.json
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def spoil(path: Path, kind: str, change: object, whole: bytes) -> None:
    """Put the odd `kind` of file at `path`, in place of `whole`."""
    path.unlink(missing_ok=True)
    if kind == "a folder":
        path.mkdir()
    elif kind == "a link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "17 MB":
        with open(path, "wb") as file:
            file.write(whole)
            file.truncate(17 * 2**20)  # sparse: no disk used
    elif isinstance(change, dict):  # new values in the whole JSON file
        path.write_text(json.dumps({**json.loads(whole), **change}))
    else:
        path.write_bytes(change if isinstance(change, bytes) else change(whole))


def report_corpus() -> list[tuple[str, str, object, bytes]]:
    """(file, kind, change, the odd job's folder name): every odd kind × every file, the odd
    values of each file, and odd folder names."""
    cases = [(f, kind, change, b"1_odd") for f in JOB_FILES for kind, change in UNREADABLE.items()]
    cases += [(f, kind, None, b"1_odd") for f in JOB_FILES for kind in NO_FILE]
    cases += [(f, kind, change, b"1_odd") for f, kind, change in odd_values()]
    cases += [("", "an odd folder name", None, name) for name in odd_names()]
    return cases


def test_every_odd_file_of_a_job_folder_is_reported_around(
    job_files, tmp_path, monkeypatch, capsys
):
    """One odd job beside a whole one, for each case: dlcourse-sweep-report and dlcourse-runs
    (table and --json) show both jobs, list what they could not read, and write and print
    one line per job: nothing read from a file adds a line, a cell, or a terminal code."""
    monkeypatch.chdir(tmp_path)  # where a !!python tag would `touch pwned`
    cases = report_corpus()
    for number, (name, kind, change, odd_name) in enumerate(cases):
        sweep_dir = tmp_path / f"sweep{number}"
        failed = name == FAILED
        write_job(sweep_dir / "0_good", job_files["good"], failed=False)
        odd = sweep_dir / os.fsdecode(odd_name)
        write_job(odd, job_files["odd"], failed=failed)
        if name:
            spoil(odd / name, kind, change, job_files["odd"][name])
        where = (name, kind, odd_name)
        status, output = call("dlcourse-sweep-report", [str(sweep_dir)], monkeypatch, capsys)
        assert status == 0 and "Traceback" not in output, (where, output[-1500:])
        assert printable(output), where
        # Half a YAML list is a shorter list, and a NaN val/acc, an odd extra metric or error
        # text are read as they are: only the other kinds are sure to be unreadable.
        spoiled = kind in NO_FILE or kind in UNREADABLE and kind != "cut in half"
        spoiled = spoiled or kind in UNUSABLE_METRICS
        check_report(sweep_dir, unreadable=name in READ_BY_THE_REPORT and spoiled)
        status, output = call("dlcourse-runs", [str(sweep_dir)], monkeypatch, capsys)
        assert status == 0 and "Traceback" not in output, (where, output[-1500:])
        # One line per job and the header; or, where the folders' names leave no room for the
        # rest, each name on a line of its own (issue #26): nothing read from a file adds others.
        assert printable(output) and len(output.splitlines()) in (3, 6), (where, output)
        status, output = call("dlcourse-runs", [str(sweep_dir), "--json"], monkeypatch, capsys)
        assert status == 0 and len(json.loads(output)) == 2, (where, output[-1500:])
        assert not (tmp_path / "pwned").exists()
    assert len(cases) == 96


def printable(text: str) -> bool:
    """No control characters but line ends (no terminal codes, no carriage returns)."""
    return not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) < 0xA0 for c in text)


def check_report(sweep_dir: Path, unreadable: bool) -> None:
    """report.md: only the report's own lines (a title, table rows, headings, items), each job
    in exactly one place; report.csv: a header and one row per job, all of one length."""
    lines = (sweep_dir / "report.md").read_text().splitlines()
    assert lines[0].startswith("# Sweep ") and all(
        line == "" or line.startswith(("| ", "|", "## ", "- ")) for line in lines[1:]
    ), lines
    headings = [line for line in lines if line.startswith("## ")]
    allowed = {
        "## Failed jobs",
        "## Jobs without a finite val/acc",
        "## Files that could not be read",
    }
    assert set(headings) <= allowed and len(headings) == len(set(headings)), headings
    table = [line for line in lines[4:] if line.startswith("|")]
    sections = "\n".join(lines).split("\n## ")[1:]
    listed = sum(s.count("\n- ") for s in sections if not s.startswith("Files that"))
    assert len(table) + listed == 2, lines
    assert ("## Files that could not be read" in headings) >= unreadable, lines
    columns = len(lines[2].split(" | "))
    assert all(len(row.split(" | ")) == columns for row in table), lines
    rows = list(csv.reader(io.StringIO((sweep_dir / "report.csv").read_text())))
    assert len(rows) == 3 and len({len(row) for row in rows}) == 1, rows
