"""The GPU path (issue #17). Tests marked `cuda` run where a CUDA GPU is (`make gpu-check` runs
them) and skip elsewhere; the last test keeps scripts/gpu_check.py working on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, call, compose_config, quick_overrides
from PIL import Image
from torch import nn

from dlcourse.data.mnist import mnist
from dlcourse.infrastructure.checkpoint import load_checkpoint
from dlcourse.infrastructure.loggers import NullLogger
from dlcourse.infrastructure.run_files import NullRunFiles
from dlcourse.infrastructure.schema import TrainerSettings
from dlcourse.models import CNN
from dlcourse.run import train
from dlcourse.schedulers import constant
from dlcourse.trainer import Trainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
on_gpu = [pytest.mark.cuda, needs_cuda]


def gpu_run(tiny_mnist: Path, tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_config([*quick_overrides(tiny_mnist), "model=cnn", *overrides])
    cfg.trainer.device = "cuda"
    return train(cfg, tmp_path)


@pytest.mark.parametrize("precision", ["32", "bf16", "16-mixed"])
@pytest.mark.cuda
@needs_cuda
def test_each_precision_trains_on_the_gpu(tiny_mnist, tmp_path, precision):
    metrics = gpu_run(tiny_mnist, tmp_path, f"trainer.precision={precision}")
    assert math.isfinite(metrics["test/loss"]) and 0 <= metrics["test/acc"] <= 1
    assert (
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")["config"]["trainer"]["precision"]
        == precision
    )


class Overflowing(nn.Module):
    """Cross-entropy whose second call is 1e30 times too large: finite in float32, but its
    gradients overflow float16, which is what loss scaling must survive."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = nn.functional.cross_entropy(outputs.float(), targets)
        return loss * 1e30 if self.calls == 2 else loss


@pytest.mark.cuda
@needs_cuda
def test_loss_scaling_engages_skips_an_overflow_and_recovers(tiny_mnist, tmp_path):
    data = mnist(str(tiny_mnist), batch_size=32, val_size=50, seed=0, device="cuda")
    model = CNN(channels=[8, 16]).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    settings = TrainerSettings(epochs=1, device="cuda", precision="16-mixed", progress_bar=False)
    # fmt: off
    trainer = Trainer(model, Overflowing(), optimizer, constant(optimizer, 10, 10), data,
                      NullLogger(), settings, torch.device("cuda"), NullRunFiles(tmp_path), {})
    # fmt: on
    assert trainer.scaler.is_enabled()
    batches = iter(data.train)
    trainer.train_step(next(batches))  # a normal step
    scale = trainer.scaler.get_scale()
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train_step(next(batches))  # the overflow: skipped, the scale halved
    assert trainer.scaler.get_scale() == scale / 2
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    trainer.train_step(next(batches))  # and training goes on
    assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(
    "setting", ["trainer.channels_last=true", "trainer.compile=true"], ids=["nhwc", "compile"]
)
@pytest.mark.cuda
@needs_cuda
def test_channels_last_and_compile_train_on_the_gpu(tiny_mnist, tmp_path, setting):
    metrics = gpu_run(tiny_mnist, tmp_path, setting)
    assert math.isfinite(metrics["test/loss"])


@pytest.mark.cuda
@needs_cuda
def test_pinned_non_blocking_copies_give_the_same_batches(tiny_mnist):
    from dlcourse.data.batches import to_device

    data = mnist(str(tiny_mnist), batch_size=32, val_size=50, seed=0, loader="dataloader")
    for batch in data.train:
        pinned = tuple(t.pin_memory() for t in batch)
        fast = to_device(pinned, torch.device("cuda"))  # non_blocking from pinned memory
        slow = tuple(t.to("cuda") for t in batch)
        torch.cuda.synchronize()
        assert all(torch.equal(a, b) for a, b in zip(fast, slow))


@pytest.mark.cuda
@needs_cuda
def test_resume_on_the_gpu_is_bit_exact_when_deterministic(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
    settings = ["trainer.deterministic=true", "trainer.epochs=2"]
    gpu_run(tiny_mnist, tmp_path / "whole", *settings)
    gpu_run(tiny_mnist, tmp_path / "halves", "trainer.deterministic=true", "trainer.epochs=1")
    last = tmp_path / "halves" / "checkpoints" / "last.pt"
    gpu_run(tiny_mnist, tmp_path / "resumed", *settings, f"+resume={last}")
    whole, resumed = (
        load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"]
        for name in ("whole", "resumed")
    )
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.cuda
@needs_cuda
def test_ddp_with_nccl_in_one_process(tiny_mnist, tmp_path):
    env = {**os.environ, "DLCOURSE_DATA_DIR": str(tiny_mnist), "MASTER_ADDR": "127.0.0.1"}
    env |= {"MASTER_PORT": "29517", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    command = [sys.executable, "-m", "dlcourse.commands.train", *quick_overrides(tiny_mnist)]
    command += ["trainer.device=cuda", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "metrics.json").is_file()


@pytest.mark.parametrize(("trained_on", "used_on"), [("cuda", "cpu"), ("cpu", "cuda")])
@pytest.mark.cuda
@needs_cuda
def test_checkpoints_move_between_gpu_and_cpu(
    tiny_mnist, tmp_path, trained_on, used_on, monkeypatch, capsys
):
    cfg = compose_config([*quick_overrides(tiny_mnist), "model=cnn"])
    cfg.trainer.device = trained_on
    metrics = train(cfg, tmp_path / "run")
    results = tmp_path / "results.json"
    argv = [f"ckpt_path={tmp_path / 'run'}", f"output_path={results}", f"device={used_on}"]
    status, output = call("dlcourse-eval", argv, monkeypatch, capsys)
    assert status == 0, output
    assert json.loads(results.read_text())["test/acc"] == pytest.approx(
        metrics["test/acc"], abs=0.01
    )
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "" if used_on == "cpu" else "0")
    status, output = call(
        "dlcourse-predict",
        [str(tmp_path / "run"), str(tmp_path / "digit.png")],
        monkeypatch,
        capsys,
    )
    assert status == 0, output


def test_gpu_check_runs_dry_on_the_cpu(tiny_mnist, tmp_path):
    """`make gpu-check` is one prepared script for a short GPU loan; its dry run on the CPU (tiny
    limits) goes through every step here, so it cannot rot between loans."""
    doc = tmp_path / "benchmarks.md"
    command = [sys.executable, "scripts/gpu_check.py", "--dry-run"]
    command += ["--data-dir", str(tiny_mnist), "--doc", str(doc)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    section = doc.read_text()
    assert "<!-- gpu-check:begin -->" in section and "a dry run" in section
    assert "Tests marked `cuda`:" in section and "skipped" in section
    for preset in ("fast_cnn_mnist", "cnn_mnist", "examples_mnist"):
        assert f"| `{preset}` |" in section
    assert "pytorch/examples" in section and "Trainer overhead" in section
