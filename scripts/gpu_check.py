"""Prove dlcourse's GPU path in one short call, and record it in docs/benchmarks.md.

    make gpu-check                                  # on a CUDA GPU: meant for ≤ 8 min (untimed yet)
    python scripts/gpu_check.py --dry-run --data-dir DIR --doc /tmp/benchmarks.md   # CPU, tiny

On a lent GPU machine (torch there, no network, no venv, no ../shared): carry MNIST and the
pure-Python packages torch lacks, both git-ignored, e.g.
    mkdir -p .gpu-data .whl/site && cp -r ../shared/data/MNIST .gpu-data/
    cp -r .venv/lib/python3.*/site-packages/{hydra,omegaconf,antlr4} .whl/site/
    # device tool: carry [".whl", ".gpu-data"], command:
    PYTHONPATH=$PWD/.whl/site make gpu-check ARGS="--data-dir .gpu-data"

On a GPU (issue #17), in this order, each step's result printed as it comes:
1. the card, driver, CUDA and torch versions;
2. the tests marked `cuda` (tests/test_cuda.py: precisions and loss scaling, channels_last,
   torch.compile, pinned-memory copies, bit-exact resume, NCCL, GPU ↔ CPU checkpoints);
3. fast_cnn_mnist, cnn_mnist and examples_mnist trained to their accuracies, with seconds;
4. pytorch/examples' MNIST loop against experiment=examples_mnist, one epoch each, 2 rounds;
5. scripts/bench.py's trainer-overhead rows (Trainer.train_one_epoch against a bare loop);
then the section between `<!-- gpu-check:begin -->` and `<!-- gpu-check:end -->` is rewritten.
`--dry-run` runs every step on the CPU with tiny limits, so that `make test` keeps this script
working between GPU loans (its numbers mean nothing and it says so in the section it writes).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench import DOC, trainer_overhead, write_section  # scripts/, beside this file
from bench_reference import dlcourse_run, reference_run
from hydra import compose, initialize_config_dir

from dlcourse.infrastructure.config import config_dir, register_resolvers
from dlcourse.run import train

REPO_ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"fast_cnn_mnist": 0.99, "cnn_mnist": 0.99, "examples_mnist": 0.99}  # test/acc goals
DRY = ["trainer.limit_train_batches=2", "trainer.limit_eval_batches=1", "trainer.epochs=1"]


def versions(device: str) -> list[str]:
    """What the numbers were measured on."""
    if device != "cuda":
        cpu = platform.processor() or platform.machine()
        return [f"Device: CPU ({cpu}), torch {torch.__version__}: a dry run, numbers mean nothing."]
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    driver = subprocess.run(query, capture_output=True, text=True).stdout.strip() or "unknown"
    return [
        f"Card: {torch.cuda.get_device_name(0)}, driver {driver}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}, torch {torch.__version__}, Python "
        f"{platform.python_version()}."
    ]


def cuda_tests(data_dir: str) -> tuple[str, bool]:
    """The tests marked `cuda`, in a subprocess: their summary line, and whether all passed
    (without CUDA they skip, and a run of skips counts as passing)."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"]
    env = {**os.environ, "DLCOURSE_DATA_DIR": data_dir}
    result = subprocess.run(
        [*command, "tests/test_cuda.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if "No module named pytest" in result.stderr:
        return "not run (pytest is not installed here)", False
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    return summary, result.returncode == 0


def train_preset(preset: str, device: str, data_dir: str, dry_run: bool) -> dict[str, float]:
    overrides = [f"experiment={preset}", f"trainer.device={device}", f"paths.data_dir={data_dir}"]
    overrides += ["trainer.progress_bar=false", *(DRY + ["dataset.val_size=50"] if dry_run else [])]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    start = time.perf_counter()
    metrics = train(cfg, Path(tempfile.mkdtemp(prefix=f"gpu-check-{preset}-")))
    return metrics | {"wall_seconds": time.perf_counter() - start}


def preset_rows(device: str, data_dir: str, dry_run: bool) -> list[str]:
    lines = [
        "| preset | epochs | test/acc | goal | train + eval s | whole run s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for preset, goal in PRESETS.items():
        m = train_preset(preset, device, data_dir, dry_run)
        verdict = "met" if m["test/acc"] >= goal else "NOT met"
        lines.append(
            f"| `{preset}` | {m['epochs']} | {m['test/acc']:.2%} | ≥ {goal:.0%} ({verdict}) | "
            f"{m['train_seconds']:.2f} | {m['wall_seconds']:.1f} |"
        )
        print(lines[-1], flush=True)
    return lines


def reference_rows(device: str, data_dir: str, dry_run: bool) -> list[str]:
    """pytorch/examples' loop against ours, interleaved, 2 rounds of one epoch (seconds per
    epoch include the evaluation each does after it)."""
    lines = [
        "| round | pytorch/examples s / epoch | dlcourse examples_mnist s / epoch | ratio |",
        "| --- | --- | --- | --- |",
    ]
    overrides = [f"trainer.device={device}"]
    overrides += DRY[:2] + ["dataset.val_size=50"] if dry_run else []
    for seed in (1, 2):
        theirs, _ = reference_run(1, seed, device, data_dir, limit_batches=2 if dry_run else None)
        ours, _ = dlcourse_run(1, seed, overrides, data_dir)
        lines.append(f"| {seed} | {theirs:.2f} | {ours:.2f} | {ours / theirs:.2f} |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiny limits")
    parser.add_argument("--data-dir", default=os.environ.get("DLCOURSE_DATA_DIR", "data"))
    parser.add_argument("--doc", type=Path, default=DOC, help="where to write the section")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA GPU here; on the CPU run: python scripts/gpu_check.py --dry-run")
        return 2
    register_resolvers()
    device = "cpu" if args.dry_run else "cuda"
    command = " ".join(["python scripts/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [f"Run {datetime.date.today()}: `{command}`", ""]
    lines += versions(device)
    print("\n".join(lines), flush=True)
    summary, tests_passed = cuda_tests(args.data_dir)
    print(f"Tests marked `cuda`: {summary}.", flush=True)
    lines += ["", f"Tests marked `cuda`: {summary}.", "", "Presets to their accuracies:", ""]
    lines += preset_rows(device, args.data_dir, args.dry_run)
    lines += ["", "pytorch/examples' MNIST loop against ours (issue #17: ours ≥ 3× faster):", ""]
    try:
        lines += reference_rows(device, args.data_dir, args.dry_run)
    except ImportError as error:  # the reference loop needs torchvision's MNIST and DataLoader
        lines.append(f"not run: {error}")
    val_size = 50 if args.dry_run else 5000
    lines += [""] + trainer_overhead(2 if args.dry_run else 5, device, args.data_dir, val_size)
    write_section("gpu-check", lines, args.doc)
    return 0 if tests_passed else 1


if __name__ == "__main__":
    sys.exit(main())
