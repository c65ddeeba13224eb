"""What pruning saves in an Optuna search, and what it costs in the best result found.

    DLCOURSE_DATA_DIR=../shared/data python scripts/bench_pruning.py [--trials 24] [--epochs 3]
        [--pruners none median successive_halving]

Runs `dlcourse-train hparams_search=mnist_optuna` (an MLP's lr, momentum, hidden size and batch
size, TPE with the preset's seed) once per pruner, one after the other on the same machine, each
in a fresh sweep folder, and compares every pruned search to the unpruned one (`none`): total
wall time of the sweep command, and the best val/acc it found. Goal (issue #16): pruning cuts
the time by ≥ 40 % with the best val/acc within 0.2 points. Writes the `pruning` section of
docs/benchmarks.md. Not a test: a search on real MNIST takes minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench import machine_line, write_section  # scripts/bench.py, beside this file


def search(pruner: str, trials: int, epochs: int, folder: Path, data_dir: str) -> dict:
    """One whole search, timed from outside: what a user waits for."""
    command = [
        str(Path(sys.executable).parent / "dlcourse-train"),
        "hparams_search=mnist_optuna",
        f"hydra/sweeper/pruner={pruner}",
        f"hydra.sweeper.n_trials={trials}",
        f"trainer.epochs={epochs}",
        f"hydra.sweep.dir={folder / pruner}",
        f"paths.data_dir={data_dir}",
        "trainer.device=cpu",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"the {pruner} search failed:\n{result.stderr[-3000:]}")
    results = yaml.safe_load((folder / pruner / "optimization_results.yaml").read_text())
    return {"seconds": seconds, **results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pruners", nargs="+", default=["none", "median", "successive_halving"])
    args = parser.parse_args()
    data_dir = os.environ.get("DLCOURSE_DATA_DIR", "data")
    outcomes = {}
    with tempfile.TemporaryDirectory() as folder:
        for pruner in args.pruners:
            outcomes[pruner] = search(pruner, args.trials, args.epochs, Path(folder), data_dir)
            print(pruner, outcomes[pruner], flush=True)
    baseline = outcomes.get("none")
    lines = [
        machine_line(1),
        f"Command: `DLCOURSE_DATA_DIR=../shared/data python scripts/bench_pruning.py --trials "
        f"{args.trials} --epochs {args.epochs} --pruners {' '.join(args.pruners)}`",
        "",
        "| pruner | sweep time | vs none | best val/acc | vs none | trials complete / pruned |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for pruner, outcome in outcomes.items():
        cut = 1 - outcome["seconds"] / baseline["seconds"] if baseline else float("nan")
        gap = 100 * (outcome["best_value"] - baseline["best_value"]) if baseline else float("nan")
        counts = outcome["trials"]
        versus = (f"{-cut:+.0%}", f"{gap:+.2f} points") if pruner != "none" else ("", "")
        lines.append(
            f"| {pruner} | {outcome['seconds']:.0f} s | {versus[0]} | "
            f"{100 * outcome['best_value']:.2f} % | {versus[1]} | "
            f"{counts['complete']} / {counts['pruned']} |"
        )
    print("\n".join(lines))
    write_section("pruning", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
