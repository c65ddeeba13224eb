"""DistributedDataParallel on the CPU: torchrun with 2 gloo processes, on tiny data."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

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

from dlcourse.data import TensorBatches
from dlcourse.infrastructure.checkpoint import load_checkpoint
from dlcourse.run import train


def torchrun(arguments: list[str]) -> list[str]:
    return [
        str(BIN / "torchrun"),
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "dlcourse.commands.train",
        *arguments,
    ]


def run_ddp(arguments: list[str], cwd, data_dir) -> subprocess.CompletedProcess:
    """torchrun in `cwd`, with its own temporary folder (cwd/tmp): no rank may leave a scratch
    folder of dlcourse's there."""
    (cwd / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "DLCOURSE_DATA_DIR": str(data_dir), "TMPDIR": str(cwd / "tmp")}
    result = subprocess.run(
        torchrun(arguments), cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert not list((cwd / "tmp").glob("dlcourse-*")), list((cwd / "tmp").iterdir())
    return result


def test_shards_cover_the_epoch_once_with_equal_lengths():
    shards = []
    for rank in range(3):
        batches = TensorBatches((torch.arange(10),), batch_size=2, shuffle=True, seed=5)
        batches.shard(rank, 3)
        batches.set_epoch(1)
        shards.append(torch.cat([ids for (ids,) in batches]))
    assert [len(shard) for shard in shards] == [4, 4, 4]  # 10 samples padded to 12
    assert set(torch.cat(shards).tolist()) == set(range(10))
    evaluation = [TensorBatches((torch.arange(10),), batch_size=3, shuffle=False) for _ in range(3)]
    for rank, batches in enumerate(evaluation):
        batches.shard(rank, 3)
    assert sorted(torch.cat([ids for b in evaluation for (ids,) in b]).tolist()) == list(
        range(10)
    )  # exact


def test_ddp_with_batch_b_matches_one_process_with_batch_2b(tiny_mnist, tmp_path):
    common = [
        *quick_overrides(tiny_mnist),
        "model=mlp",
        "model.hidden_sizes=[32]",
        "trainer.epochs=2",
    ]
    result = run_ddp([*common, "dataset.batch_size=25"], tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("Parameters are identical on all 2 ranks.") == 1  # said by rank 0
    # Rank 0 speaks for both: each line of the run's log once, not once per rank.
    assert output.count("Training MLP") == 1 and output.count("epoch 2/2") == 1, output[-3000:]
    run_dir = only_run_folder(tmp_path / "outputs" / "runs")  # one folder for both ranks

    single = train(compose_config([*common, "dataset.batch_size=50"]), tmp_path / "single")
    distributed = json.loads((run_dir / "metrics.json").read_text())
    assert distributed["steps"] == single["steps"] == 2 * 5  # 250 images: 5 steps of 2 × 25
    for key in ("train/loss", "val/loss", "test/loss", "val/acc", "test/acc"):
        assert distributed[key] == pytest.approx(single[key], abs=1e-4), key
    ddp_weights = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    single_weights = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["model"]
    for name, weight in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], weight, atol=1e-5, rtol=1e-4)


def test_sigterm_to_torchrun_stops_both_ranks_at_the_same_step_and_resumes(tiny_mnist, tmp_path):
    env = {**os.environ, "DLCOURSE_DATA_DIR": str(tiny_mnist)}
    command = torchrun([*quick_overrides(tiny_mnist), "trainer.epochs=100000"])
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while (
        not list((tmp_path / "outputs" / "runs").glob("*/checkpoints/last.pt"))
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    steps = re.findall(r"stopped by SIGTERM after step (\d+)", output)
    assert len(steps) == 2 and steps[0] == steps[1], output[-3000:]

    run_dir = only_run_folder(tmp_path / "outputs" / "runs")
    stopped = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert stopped["step"] == int(steps[0])
    # A checkpoint of the 2-process run resumes in a single process.
    result = run_command(
        ["dlcourse-train", f"resume={run_dir}", f"trainer.epochs={stopped['epoch']}"],
        tmp_path,
        tiny_mnist,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] >= stopped["step"]


def test_single_process_checkpoint_resumes_under_torchrun(tiny_mnist, tmp_path):
    run_dir = tmp_path / "outputs" / "runs" / "single"
    train(compose_config([*quick_overrides(tiny_mnist), "trainer.epochs=1"]), run_dir)
    result = run_ddp([f"resume={run_dir}", "trainer.epochs=2"], tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (
        metrics["epochs"] == 2 and metrics["steps"] == STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2
    )  # epoch 2: shards of half
