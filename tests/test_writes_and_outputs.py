"""What dlcourse writes, it never writes through someone else's link, over an input or another
run, and it never signals a process because a file names it (issue 24, points 1-4 and 6).

Each test builds a corpus of cases (every place a link can be planted, every output path that
lands on something it must not) and runs each command that could touch it.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import BIN, call, only_run_folder, quick_overrides, run_command

from dlcourse.infrastructure import files, locks
from dlcourse.infrastructure.checkpoint import load_checkpoint
from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.interrupt import ForwardStopToJobs, descendants
from dlcourse.infrastructure.run_folder import LOCK, STOP_MARKER, FolderInUse, RunFolder


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links as links) and a hash of its bytes."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def finished_run(tiny_mnist, tmp_path_factory) -> Path:
    """A finished 2-epoch run written by the command line (copied by each test before use)."""
    cwd = tmp_path_factory.mktemp("finished")
    result = run_command(["dlcourse-train", *quick_overrides(tiny_mnist)], cwd, tiny_mnist)
    assert result.returncode == 0, result.stderr
    return only_run_folder(cwd / "outputs" / "runs")


def copy_run(run: Path, where: Path) -> Path:
    copy = where / "run"
    shutil.copytree(run, copy, symlinks=True)
    return copy


# --- 1. A command run in a longer-lived process leaves no logging handler behind -------------


def test_a_command_leaves_no_logging_handler_on_a_stream_it_was_given(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    handlers = {name: list(logging.getLogger(name).handlers) for name in ("", "dlcourse")}
    monkeypatch.chdir(tmp_path)
    status, output = call(
        "dlcourse-train", [*quick_overrides(tiny_mnist), "trainer.epochs=1"], monkeypatch, capsys
    )
    assert status == 0, output
    assert {n: list(logging.getLogger(n).handlers) for n in handlers} == handlers
    logging.getLogger("matplotlib.font_manager").warning("after the command")  # as on a fresh
    assert "Logging error" not in capsys.readouterr().err  # machine, where matplotlib logs


# --- 2. Never write through a link ------------------------------------------------------------

# Every file or folder of a run that some command writes.
WRITTEN = [
    "metrics.json",
    "train.log",
    "curves.png",
    "top_losses.png",
    "hparams",  # TensorBoard's HParams sub-run (infrastructure/loggers.py)
    "model.safetensors",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
    "checkpoints/best.test.json",
    ".hydra/resume-1",
    "checkpoints",
    ".hydra",
    ".lock",
]
LINK_KINDS = ["file", "dangling", "folder"]


def plant(run: Path, name: str, kind: str, victim: Path) -> Path:
    """Replace `run/name` by a link to a victim file, a missing file or a victim folder."""
    place = run / name
    if place.is_dir() and not place.is_symlink():
        shutil.rmtree(place)
    else:
        place.unlink(missing_ok=True)
    target = {"file": victim / "bashrc", "dangling": victim / "missing", "folder": victim}[kind]
    place.symlink_to(target)
    return place


@pytest.mark.parametrize("command", ["resume", "eval"])
def test_no_command_writes_through_a_link_planted_in_a_run_folder(
    command, finished_run, tiny_mnist, tmp_path, monkeypatch, capsys
):
    cases = 0
    for name, kind in itertools.product(WRITTEN, LINK_KINDS):
        where = tmp_path / f"{cases}"
        victim = where / "victim"
        victim.mkdir(parents=True)
        (victim / "bashrc").write_text("export PATH=/usr/bin\n")
        run = copy_run(finished_run, where)
        link = plant(run, name, kind, victim)
        before, run_before = digest(victim), digest(run)
        monkeypatch.chdir(where)
        if command == "resume":
            argv = [f"resume={run}", "trainer.epochs=3", f"paths.data_dir={tiny_mnist}"]
            status, output = call("dlcourse-train", argv, monkeypatch, capsys)
        else:
            status, output = call("dlcourse-eval", [f"ckpt_path={run}"], monkeypatch, capsys)
        cases += 1
        assert digest(victim) == before, (name, kind, output)  # nothing written through it
        assert "Traceback" not in output, (name, kind, output)
        assert not (victim / "missing").exists(), (name, kind)
        if command == "resume" and status == 0:  # no run there (last.pt is a link): a branch
            assert name == "checkpoints/last.pt" and digest(run) == run_before, output
            assert only_run_folder(where / "outputs" / "runs") != run
        elif command == "resume":  # a resume writes into the whole folder: any link is refused
            assert status == 2 and len(error_lines(output)) == 1, (name, kind, output)
            assert str(link) in output or "no checkpoint" in output or "load" in output, output
        elif name in ("checkpoints", "checkpoints/best.test.json"):
            assert status == 2 and len(error_lines(output)) == 1, (name, kind, output)
            assert "symbolic link" in output or "checkpoint" in output, output
    assert cases == len(WRITTEN) * len(LINK_KINDS)


def test_no_report_or_prediction_is_written_through_a_planted_link(
    finished_run, tmp_path, monkeypatch, capsys
):
    """dlcourse-sweep-report's files in a sweep folder handed to you, and dlcourse-predict's
    beside an image (--save-input's derived name, or one named with --output): a link in any
    of those places, to a file, to nothing or to a folder, is refused in one line naming it."""
    from PIL import Image

    places = [("dlcourse-sweep-report", name) for name in ("report.md", "report.csv", "report.png")]
    places += [(command, "digit_input.png") for command in ("dlcourse-predict", "--output")]
    cases = 0
    for (command, name), kind in itertools.product(places, LINK_KINDS):
        where = tmp_path / f"{cases}"
        victim = where / "victim"
        victim.mkdir(parents=True)
        (victim / "bashrc").write_text("export PATH=/usr/bin\n")
        sweep = where / "sweep"
        shutil.copytree(finished_run, sweep / "0_model=mlp", symlinks=True)
        Image.new("L", (28, 28), 255).save(where / "digit.png")
        link = plant(sweep if command == "dlcourse-sweep-report" else where, name, kind, victim)
        before = digest(victim)
        argv = [str(finished_run), str(where / "digit.png"), "--save-input"]
        if command == "dlcourse-sweep-report":
            argv = [str(sweep)]
        elif command == "--output":  # the user names the link itself as the output
            command, argv = "dlcourse-predict", [*argv, "--output", str(link)]
        status, output = call(command, argv, monkeypatch, capsys)
        cases += 1
        assert digest(victim) == before and not (victim / "missing").exists(), (name, kind)
        assert status == 2 and "Traceback" not in output, (name, kind, output[-800:])
        assert len(error_lines(output)) == 1 and str(link) in output, (name, kind, output)
    assert cases == 15


def test_written_files_are_new_files_renamed_into_place(tmp_path):
    """A hard link to the place (a file of the user's sharing its inode) is replaced, not
    written into; a link, anywhere between the root and the file, is refused."""
    user_file = tmp_path / "mine.txt"
    user_file.write_text("keep me\n")
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    os.link(user_file, run / "sub" / "metrics.json")
    files.write_file(run / "sub" / "metrics.json", "{}\n", root=run)
    assert user_file.read_text() == "keep me\n" and (run / "sub" / "metrics.json").read_text()
    (run / "linked").symlink_to(tmp_path)
    for target in (run / "linked" / "x.json", run / "linked" / "deeper" / "x.json"):
        with pytest.raises(files.LinkRefused, match="linked"):
            files.write_file(target, "{}", root=run)
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "deeper").exists()
    assert not [p for p in run.rglob(".*") if p.is_file()]  # no temporary file left


def test_a_read_only_place_is_one_line(tmp_path):
    """As any user: a read-only file system (root may write anywhere else); else a folder
    without the write bit."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        folder.chmod(0o500)
    try:
        if not mounted and os.access(folder, os.W_OK):
            pytest.skip("root, and mounting a read-only file system is not allowed here")
        for name in ("report.md", "sub/metrics.json"):
            with pytest.raises(UserError, match="cannot write .*(Read-only|Permission denied)"):
                files.write_file(folder / name, "x")
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        folder.chmod(0o700)


# --- 3. Outputs never overwrite inputs or another run -----------------------------------------


def output_paths(run: Path, other: Path, data: Path) -> list[str]:
    """Every kind of place an output_path must not be."""
    checkpoints = run / "checkpoints"
    return [
        str(checkpoints / "best.pt"),  # the input itself
        str(checkpoints / ".." / "checkpoints" / "best.pt"),
        os.path.relpath(checkpoints / "best.pt"),
        str(checkpoints / "last.pt"),  # a checkpoint
        str(run / "model.safetensors"),
        str(run / "results.pt"),
        str(other / "metrics.json"),  # another run's
        str(other / "results.json"),
        str(other / "checkpoints" / "best.test.json"),
        str(data / "MNIST" / "raw" / "t10k-images-idx3-ubyte"),  # the data it reads
        str(data / "results.json"),
        str(run),  # a folder
    ]


def test_eval_never_writes_over_its_inputs_or_another_run(
    finished_run, tiny_mnist, tmp_path, monkeypatch, capsys
):
    run, other = copy_run(finished_run, tmp_path / "a"), copy_run(finished_run, tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    before = digest(tmp_path), digest(tiny_mnist)
    paths = output_paths(run, other, tiny_mnist)
    for output in paths:
        argv = [f"ckpt_path={run}", f"output_path={output}", f"data_dir={tiny_mnist}"]
        status, printed = call("dlcourse-eval", argv, monkeypatch, capsys)
        assert status == 2 and len(error_lines(printed)) == 1, (output, printed)
        assert "Traceback" not in printed
    assert (digest(tmp_path), digest(tiny_mnist)) == before
    assert len(paths) == 12
    status, printed = call(
        "dlcourse-eval",
        [f"ckpt_path={run}", f"output_path={tmp_path / 'mine.json'}"],
        monkeypatch,
        capsys,
    )
    assert status == 0 and json.loads((tmp_path / "mine.json").read_text())["test/acc"] >= 0


def test_a_run_writes_only_into_a_folder_it_made_or_the_one_it_resumes(
    finished_run, tiny_mnist, tmp_path, monkeypatch, capsys
):
    run, other = copy_run(finished_run, tmp_path / "a"), copy_run(finished_run, tmp_path / "b")
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("\\documentclass{article}\n")
    (home / ".hydra").mkdir()  # even beside what looks like a run's record
    monkeypatch.chdir(home)
    before = digest(tmp_path)
    quick = quick_overrides(tiny_mnist)
    cases = [
        [f"resume={run}", f"hydra.run.dir={other}", *quick],  # into another run
        [f"resume={run}/checkpoints/last.pt", f"hydra.run.dir={other}", *quick],
        [f"resume={run}", "hydra.run.dir=.", *quick],  # into the user's own files
        [f"resume={run}", f"hydra.run.dir={home}", *quick],
        ["hydra.run.dir=.", *quick],  # a new run, into the user's files
        [f"hydra.run.dir={home}", *quick],
        [f"hydra.run.dir={other}", *quick],  # a new run into a run
        [f"hydra.run.dir={other}/checkpoints", *quick],
        [f"hydra.run.dir={other}/.hydra", *quick],
    ]
    for argv in cases:
        status, output = call("dlcourse-train", argv, monkeypatch, capsys)
        assert status == 2 and len(error_lines(output)) == 1, (argv, output)
        assert "Traceback" not in output
    assert digest(tmp_path) == before


# --- 4. Never signal a process because a file says so -----------------------------------------


def unrelated_process() -> int:
    """A live process that this one did not start (its parent exits at once)."""
    shell = subprocess.run(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
    )
    return int(shell.stdout)


def test_a_stopping_sweep_signals_only_its_own_workers(tmp_path):
    sweep = tmp_path / "sweep"
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    bystander = unrelated_process()
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = os.getpid()
    worker_lock = {"pid": worker.pid, "host": "h", "started": locks.process_start_time(worker.pid)}
    holders = {
        "worker": worker_lock,
        "bystander": {"pid": bystander, "host": "h"},
        "recycled": {**worker_lock, "started": 1},  # the worker's pid, another process's start
        "dead": {"pid": dead.pid},
        "me": {"pid": me},
        **{f"pid{pid}": {"pid": pid} for pid in (0, -1, 1, 2**31, 2**70, -(2**70))},
        "string": {"pid": str(worker.pid)},
        "float": {"pid": float(worker.pid)},
        "list": {"pid": [worker.pid]},
        "bool": {"pid": True},
    }
    odd_files = {"empty": "", "half": '{"pid": ', "array": f"[{worker.pid}]", "bytes": "\udcff"}
    for name, holder in holders.items():
        (sweep / name).mkdir(parents=True)
        (sweep / name / LOCK).write_text(json.dumps(holder))
    for name, text in odd_files.items():
        (sweep / name).mkdir(parents=True)
        (sweep / name / LOCK).write_bytes(text.encode("utf-8", "surrogateescape"))
    stopper = ForwardStopToJobs()
    stopper.sweep_dir, stopper.WAIT_SECONDS = sweep, 3
    try:
        assert stopper.lock_holders() == {worker.pid}
        with pytest.raises(SystemExit):
            stopper.forward(signal.SIGTERM, None)
        assert worker.wait(timeout=10) == -signal.SIGTERM  # the sweep's own worker was told
        os.kill(bystander, 0)  # still alive: raises if it was signalled to death
        assert not (sweep / STOP_MARKER).exists()
    finally:
        worker.kill()
        os.kill(bystander, signal.SIGKILL)
    assert len(holders) + len(odd_files) == 19


def test_descendants_are_the_processes_below_this_one():
    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        time.sleep(0.3)
        below = descendants(os.getpid())
        assert child.pid in below and len(below) >= 2 and os.getpid() not in below
    finally:
        child.kill()
        child.wait()


def test_a_lock_is_never_seen_empty_and_an_unreadable_one_waits(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    dump = json.dump

    def slow_dump(holder, file):  # as if the writer were descheduled between create and write
        time.sleep(0.5)
        dump(holder, file)

    monkeypatch.setattr(locks.json, "dump", slow_dump)
    outcomes: list[str] = []

    def claim() -> None:
        try:
            RunFolder(folder, resuming=True).take_lock()
            outcomes.append("took")
        except FolderInUse:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 3 + ["took"]
    monkeypatch.setattr(locks.json, "dump", dump)
    for text in ("", "{", "[]", "null"):  # unreadable: in use while fresh, stale once old
        (folder / LOCK).write_text(text)
        with pytest.raises(FolderInUse):
            RunFolder(folder, resuming=True).take_lock()
        old = time.time() - 2 * locks.UNREADABLE_GRACE_SECONDS
        os.utime(folder / LOCK, (old, old))
        RunFolder(folder, resuming=True).take_lock()
        assert locks.read(folder / LOCK)["pid"] == os.getpid()


# --- 6. Runs that stop in odd places can always be finished ------------------------------------


def resume(run: Path, tiny_mnist: Path, monkeypatch, capsys, *more: str) -> tuple[int, str]:
    argv = [f"resume={run}", f"paths.data_dir={tiny_mnist}", *more]
    return call("dlcourse-train", argv, monkeypatch, capsys)


def test_a_run_without_its_results_is_finished_by_resuming_it(
    finished_run, tiny_mnist, tmp_path, monkeypatch, capsys
):
    """Killed during the final test, or the disk full as the weights were exported: the run
    has no metrics.json; resuming it runs the final test and writes the results."""
    killed = copy_run(finished_run, tmp_path / "killed")
    (killed / "metrics.json").unlink()
    (killed / "model.safetensors").unlink()
    status, output = resume(killed, tiny_mnist, monkeypatch, capsys)
    assert status == 0, output
    metrics = json.loads((killed / "metrics.json").read_text())
    assert (
        metrics["test/acc"] == json.loads((finished_run / "metrics.json").read_text())["test/acc"]
    )
    assert "train/loss" in metrics and (killed / "model.safetensors").is_file()
    status, output = resume(killed, tiny_mnist, monkeypatch, capsys)  # finished now: refused
    assert status == 2 and "leaves nothing to train" in output

    full = copy_run(finished_run, tmp_path / "full") / "fresh"
    write_file = files.write_file

    def no_space_for_weights(path, data, root=None):
        if Path(path).name == "model.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_file(path, data, root)

    monkeypatch.setattr("dlcourse.infrastructure.checkpoint.write_file", no_space_for_weights)
    argv = [*quick_overrides(tiny_mnist), f"hydra.run.dir={full}"]
    status, output = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 1 and len(error_lines(output)) == 1 and "no space" in output, output
    assert "Traceback" not in output and not (full / "metrics.json").exists()
    monkeypatch.setattr("dlcourse.infrastructure.checkpoint.write_file", write_file)
    status, output = resume(full, tiny_mnist, monkeypatch, capsys)
    assert (
        status == 0 and (full / "metrics.json").is_file() and (full / "model.safetensors").is_file()
    )


def test_a_lone_last_checkpoint_resumes_into_a_new_folder_to_the_end(
    finished_run, tiny_mnist, tmp_path, monkeypatch, capsys
):
    """Without its best.pt beside it, the branch's best is judged anew; with it, carried over."""
    for with_best in (False, True):
        lone = tmp_path / f"lone-{with_best}"
        lone.mkdir()
        shutil.copy(finished_run / "checkpoints" / "last.pt", lone / "last.pt")
        if with_best:
            shutil.copy(finished_run / "checkpoints" / "best.pt", lone / "best.pt")
        branch = tmp_path / f"branch-{with_best}"
        status, output = resume(
            lone / "last.pt",
            tiny_mnist,
            monkeypatch,
            capsys,
            "trainer.epochs=3",
            f"hydra.run.dir={branch}",
        )
        assert status == 0, output
        metrics = json.loads((branch / "metrics.json").read_text())
        best = load_checkpoint(branch / "checkpoints" / "best.pt")
        assert metrics["best_epoch"] == (best["best"]["epoch"]) and metrics["epochs_run"] == 3
        stored = load_checkpoint(finished_run / "checkpoints" / "best.pt")["best"]["epoch"]
        assert metrics["best_epoch"] == (stored if with_best else 3)  # anew: its one evaluation


def test_a_divergence_on_an_epochs_last_step_is_the_non_finite_message(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    """Weights blown up by an epoch's last step (its own loss was finite): the non-finite
    message, never TensorBoard's "The histogram is empty"; huge but finite weights draw none."""
    monkeypatch.chdir(tmp_path)
    stopped = []
    for model, limit, every in itertools.product(["linear", "mlp"], [1, 0], ["null", 1]):
        argv = [*quick_overrides(tiny_mnist), "optimizer.lr=1e30", f"model={model}"]
        argv += [f"trainer.limit_train_batches={limit or 'null'}"]
        argv += [f"trainer.histogram_every_n_steps={every}"]
        status, output = call("dlcourse-train", argv, monkeypatch, capsys)
        assert "Traceback" not in output and "histogram" not in output.lower(), output
        assert status in (0, 2), output
        if status == 2:
            assert len(error_lines(output)) == 1 and "Training stopped" in output, output
            stopped.append((model, limit, every))
    # The case diverges with the MLP here; the linear model's scaled-up weights still
    # give a finite loss on this tiny data (it trains on, drawing no histogram of them).
    assert ("mlp", 1, "null") in stopped


def test_torchrun_into_a_folder_that_does_not_exist_yet(tiny_mnist, tmp_path):
    folder = tmp_path / "not" / "yet"
    command = [
        str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2",
        "-m", "dlcourse.commands.train",
        "model=linear", "trainer.epochs=1", "trainer.device=cpu", f"hydra.run.dir={folder}",
        *quick_overrides(tiny_mnist)[:4],
    ]  # fmt: skip
    env = {**os.environ, "DLCOURSE_DATA_DIR": str(tiny_mnist), "TMPDIR": str(tmp_path)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (folder / "metrics.json").is_file()
    assert not list(tmp_path.glob("dlcourse-rank*"))  # the other rank's scratch folder is gone
