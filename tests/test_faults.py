"""Bad input, unsafe files, stop signals and numeric faults: one clear message, no lost work."""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    BIN,
    STEPS_PER_EPOCH,
    compose_config,
    only_run_folder,
    quick_overrides,
    run_command,
)

from dlcourse.infrastructure import cluster
from dlcourse.infrastructure.checkpoint import load_checkpoint
from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.interrupt import StopSignal
from dlcourse.run import train
from dlcourse.trainer import Trainer

# --- safe loading ------------------------------------------------------------------------------


class CreatesMarker:
    """Unpickling this would create a file: proof that code inside a checkpoint ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_a_pickled_object_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"model": {}, "config": {}, "payload": CreatesMarker(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="refused to load .*Nothing in it was run"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("content", ["truncated", "empty", "text"])
def test_damaged_files_give_a_clear_error(content, tiny_mnist, tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.ones(1000)}, "config": {}}, good)
    data = {
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
        "empty": b"",
        "text": b"hello",
    }[content]
    (tmp_path / "bad.pt").write_bytes(data)
    with pytest.raises(UserError, match="damaged, truncated or not a checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_weights_are_exported_as_safetensors_with_the_model_config(tiny_mnist, tmp_path):
    from safetensors import safe_open

    train(
        compose_config(["model=mlp", "model.hidden_sizes=[16]", *quick_overrides(tiny_mnist)]),
        tmp_path,
    )
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["model"]
    with safe_open(tmp_path / "model.safetensors", framework="pt") as exported:
        assert json.loads(exported.metadata()["model_config"])["hidden_sizes"] == [16]
        assert set(exported.keys()) == set(best)
        assert all(torch.equal(exported.get_tensor(key), best[key]) for key in best)


# --- config validation, before any data is loaded ----------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochs=2.5", "trainer.epochs=2.5 has the wrong type: expected int"),
        ("optimizer.lr=abc", "optimizer.lr='abc' has the wrong type: expected float"),
        ("+optimizer.lrr=1", "optimizer.lrr is not a setting of optimizer"),
        ("optimizer.lr=0", "optimizer.lr=0 is impossible: it must be greater than 0"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is impossible"),
        ("dataset.batch_size=0", "dataset.batch_size=0 is impossible: it must be at least 1"),
        ("trainer.epochs=0", "trainer.epochs=0 is impossible: it must be at least 1"),
        ("trainer.on_nonfinite=ignore", "expected one of stop, skip"),
        (
            "model.hidden_sizes=[8,x]",
            "model.hidden_sizes=[8, 'x'] has the wrong type: expected a list of int",
        ),
    ],
)
def test_bad_values_are_named_before_any_data_is_loaded(override, message, tmp_path):
    # The data folder does not exist: a data error would mean the check came too late.
    cfg = compose_config([f"paths.data_dir={tmp_path / 'no-data'}", "model=mlp", override])
    with pytest.raises(
        UserError, match=message.replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")
    ):
        train(cfg, tmp_path)


def test_val_size_beyond_the_training_set_is_refused(tiny_mnist, tmp_path):
    with pytest.raises(UserError, match="dataset.val_size=300 must be between 1 and 299"):
        train(compose_config([*quick_overrides(tiny_mnist), "dataset.val_size=300"]), tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "optimizer.lrr=1",
            "optimizer.lrr is not a setting of optimizer (did you mean optimizer.lr?)",
        ),
        (
            "trainer.epoch=3",
            "trainer.epoch is not a setting of trainer (did you mean trainer.epochs?)",
        ),
        ("optimzer.lr=1", "optimzer is not a top-level setting (did you mean optimizer or "),
        (
            "model=mpl",
            "model=mpl is not an option of model (did you mean model=mlp?); its options:",
        ),
        ("trainer.epochs=2.5", "trainer.epochs=2.5 has the wrong type"),
    ],
)
def test_command_line_mistakes_are_one_line_with_a_suggestion(override, message, tmp_path):
    result = run_command(["dlcourse-train", override], tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1, (
        result.stderr
    )
    assert not (tmp_path / "outputs" / "runs").exists() or not any(
        (tmp_path / "outputs" / "runs").iterdir()
    )


# --- numeric faults ----------------------------------------------------------------------------


def corrupt_weights_from_step(monkeypatch, bad_step: int) -> None:
    original = Trainer.train_step

    def train_step(self, batch):
        inputs, targets = batch
        if self.position.step + 1 >= bad_step:
            inputs = inputs * math.nan
        return original(self, (inputs, targets))

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_non_finite_loss_stops_with_a_hint_and_keeps_the_last_good_checkpoint(
    tiny_mnist, tmp_path, monkeypatch
):
    corrupt_weights_from_step(monkeypatch, bad_step=STEPS_PER_EPOCH + 3)  # in epoch 2
    cfg = compose_config([*quick_overrides(tiny_mnist), "trainer.epochs=3"])
    with pytest.raises(
        UserError,
        match=r"loss became nan in epoch 2, between steps \d+ and 1[0-2].*lower optimizer.lr",
    ):
        train(cfg, tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["step"] == 8  # the end of epoch 1
    assert all(torch.isfinite(tensor).all() for tensor in last["model"].values())


def test_on_nonfinite_skip_skips_and_counts_bad_steps(tiny_mnist, tmp_path, monkeypatch):
    original = Trainer.train_step
    monkeypatch.setattr(
        Trainer,
        "train_step",
        lambda self, batch: original(
            self, (batch[0] * math.nan if self.position.step + 1 in (3, 5) else batch[0], batch[1])
        ),
    )
    metrics = train(
        compose_config([*quick_overrides(tiny_mnist), "trainer.on_nonfinite=skip"]), tmp_path
    )
    assert metrics["nonfinite_steps"] == 2
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/loss"])


# --- determinism and devices -------------------------------------------------------------------


def test_deterministic_switch_turns_on_deterministic_algorithms(tiny_mnist, tmp_path):
    try:
        train(
            compose_config([*quick_overrides(tiny_mnist), "trainer.deterministic=true"]), tmp_path
        )
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_auto_device_falls_back_to_the_cpu_in_one_line(tiny_mnist, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dlcourse.infrastructure.runtime"):
        train(compose_config([*quick_overrides(tiny_mnist), "trainer.device=auto"]), tmp_path)
    assert [
        r.getMessage() for r in caplog.records if r.name == "dlcourse.infrastructure.runtime"
    ] == ["No CUDA GPU found: training on the CPU."]


# --- stop signals, in a real subprocess --------------------------------------------------------


def start_long_run(tiny_mnist: Path, cwd: Path) -> subprocess.Popen:
    command = [str(BIN / "dlcourse-train"), *quick_overrides(tiny_mnist), "trainer.epochs=100000"]
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_first_checkpoint(cwd: Path, process: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = list((cwd / "outputs" / "runs").glob("*/checkpoints/last.pt"))
        if found:
            return found[0].parents[1]
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"no checkpoint appeared: {process.communicate()[0]}")


@pytest.mark.parametrize(
    ("signal_number", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_stop_signal_saves_prints_the_resume_command_and_resumes(
    signal_number, exit_code, tiny_mnist, tmp_path
):
    process = start_long_run(tiny_mnist, tmp_path)
    run_dir = wait_for_first_checkpoint(tmp_path, process)
    process.send_signal(signal_number)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == exit_code, output
    assert "Traceback" not in output
    [resume_line] = [
        line.strip() for line in output.splitlines() if line.strip().startswith("dlcourse-train ")
    ]
    stopped = load_checkpoint(run_dir / "checkpoints" / "last.pt")

    # Resume to the end of the epoch it was in, as a shell reads the printed command (the run's
    # name holds its settings' `=`, so it is quoted): same folder, no new run folder.
    epochs = f"trainer.epochs={stopped['epoch']}"
    result = run_command([*shlex.split(resume_line), epochs], tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    assert only_run_folder(tmp_path / "outputs" / "runs") == run_dir
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] >= stopped["step"]


def test_under_slurm_a_second_sigterm_does_not_exit_and_usr2_asks_for_a_requeue(monkeypatch):
    """SLURM signals every task, some twice, and preemption is SIGTERM then USR2."""
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setattr(cluster, "received", set())
    with StopSignal() as stop:
        for signal_number in (signal.SIGTERM, signal.SIGTERM, signal.SIGUSR2):
            os.kill(os.getpid(), signal_number)
            time.sleep(0.05)
            if signal_number == signal.SIGTERM:
                assert stop.received == signal.SIGTERM  # and this process is still here
        assert stop.received == signal.SIGUSR2
    assert cluster.received == {signal.SIGTERM, signal.SIGUSR2}
    cluster.leave_to_slurm(signal.SIGINT, rank=0)  # Ctrl-C in an allocation: it just stops


def test_a_second_signal_exits_at_once(tmp_path):
    script = (
        "import os, signal, time\n"
        "from dlcourse.infrastructure.interrupt import StopSignal\n"
        "with StopSignal() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
        "    assert stop.received == signal.SIGINT\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "print('not reached')\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 130 and time.monotonic() - started < 20
    assert "again: exiting now" in result.stderr and "not reached" not in result.stdout
