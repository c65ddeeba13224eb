"""Batched members against runs one at a time: seeds and an lr × seed grid (issue #28 point 1).

    DLCOURSE_DATA_DIR=../shared/data python scripts/bench_members.py [--seeds 5] [--grid 4x4]
        [--presets fast_mlp_mnist fast_linear_mnist]

For each preset, whole commands timed from outside (what a user waits for), one after another:
one run; `seeds=N` one seed after another (trainer.batch_members=false); `seeds=N` as one
batched model (trainer.batch_members=true). For the first preset also an lr × seed grid as a
sweep, with Hydra's basic launcher (job after job, one process) and with hydra/launcher=batched.
Each batched member's test metrics are compared with the same run trained on its own. Writes
the `members` section of docs/benchmarks.md. Not a test: it trains on real MNIST for minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import write_section  # scripts/bench.py, beside this file

BIN = Path(sys.executable).parent
GRID_RATES = ["0.001", "0.002", "0.003", "0.005", "0.0015", "0.004", "0.006", "0.008"]


def timed(arguments: list[str]) -> float:
    command = [str(BIN / "dlcourse-train"), *arguments]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def members_of(folder: Path) -> dict[str, dict]:
    """Each run folder inside `folder` (a seed group's or a sweep's), by name: its metrics."""
    return {
        run.name: json.loads((run / "metrics.json").read_text())
        for run in sorted(folder.iterdir())
        if (run / "metrics.json").is_file()
    }


def largest_difference(batched: dict[str, dict], alone: dict[str, dict]) -> str:
    """The largest difference, over members, of test/acc (points) and test/loss (relative)."""
    accuracy = max(abs(batched[n]["test/acc"] - alone[n]["test/acc"]) for n in alone)
    loss = max(abs(batched[n]["test/loss"] / alone[n]["test/loss"] - 1) for n in alone)
    return f"test/acc {100 * accuracy:.2f} points, test/loss {loss:.1e} relative"


def seeds_rows(preset: str, seeds: int, scratch: Path) -> tuple[list[str], float]:
    one = timed([f"experiment={preset}", f"hydra.run.dir={scratch / 'one'}"])
    folders = {kind: scratch / kind for kind in ("in_turn", "batched")}
    in_turn = timed([f"experiment={preset}", f"seeds={seeds}", "trainer.batch_members=false",
                     f"hydra.run.dir={folders['in_turn']}"])  # fmt: skip
    batched = timed([f"experiment={preset}", f"seeds={seeds}", "trainer.batch_members=true",
                     f"hydra.run.dir={folders['batched']}"])  # fmt: skip
    difference = largest_difference(*(members_of(folders[k]) for k in ("batched", "in_turn")))
    return [
        f"| {preset} | one run | {one:.1f} s | 1.00 | |",
        f"| {preset} | {seeds} seeds, one after another | {in_turn:.1f} s | {in_turn / one:.2f} "
        "| |",
        f"| {preset} | {seeds} seeds, batched | {batched:.1f} s | {batched / one:.2f} | "
        f"{difference} |",
    ], one


def grid_rows(preset: str, rates: int, seeds: int, scratch: Path, one: float) -> list[str]:
    grid = [f"experiment={preset}", f"optimizer.lr={','.join(GRID_RATES[:rates])}",
            f"seed={','.join(str(s) for s in range(1, seeds + 1))}"]  # fmt: skip
    basic = timed(["-m", *grid, f"hydra.sweep.dir={scratch / 'basic'}"])
    batched = timed(["-m", *grid, "hydra/launcher=batched", f"hydra.sweep.dir={scratch / 'grid'}"])
    difference = largest_difference(members_of(scratch / "grid"), members_of(scratch / "basic"))
    size = f"{rates} lr × {seeds} seeds"
    return [
        f"| {preset} | {size}, basic launcher | {basic:.1f} s | {basic / one:.2f} | |",
        f"| {preset} | {size}, launcher=batched | {batched:.1f} s | {batched / one:.2f} | "
        f"{difference} |",
    ]


def divergence_rows(preset: str, scratch: Path) -> list[str]:
    """How far a batched member and the same run alone drift apart with the number of steps:
    the relative difference of their train/loss (the steps' mean) and of the val/loss after
    them (seed 42 of seeds=2, batched and one after another)."""
    cells = []
    for steps in (1, 10, 100, 300, 430):
        limit = ["trainer.epochs=1", f"trainer.limit_train_batches={steps}"]
        folders = {kind: scratch / f"{kind}_{steps}" for kind in ("alone", "batched")}
        for kind, folder in folders.items():
            batched = "true" if kind == "batched" else "false"
            timed([f"experiment={preset}", "seeds=2", f"trainer.batch_members={batched}", *limit,
                   f"hydra.run.dir={folder}"])  # fmt: skip
        alone, member = (json.loads((f / "seed=42" / "metrics.json").read_text())
                         for f in folders.values())  # fmt: skip
        differences = [abs(member[n] / alone[n] - 1) for n in ("train/loss", "val/loss")]
        cells.append(f"| {steps} | {differences[0]:.1e} | {differences[1]:.1e} |")
    return [
        f"Drift of a batched member from the same run alone ({preset}, seed 42 of 2, one "
        "epoch cut to N steps; relative differences):",
        "",
        "| steps | train/loss | val/loss |",
        "| --- | --- | --- |",
        *cells,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--grid", default="4x4", help="learning rates x seeds, e.g. 4x4")
    parser.add_argument("--presets", nargs="+", default=["fast_mlp_mnist", "fast_linear_mnist"])
    args = parser.parse_args()
    if not os.environ.get("DLCOURSE_DATA_DIR"):
        sys.exit("set DLCOURSE_DATA_DIR to the folder holding MNIST (../shared/data)")
    rates, grid_seeds = (int(n) for n in args.grid.split("x"))
    rows, drift = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index, preset in enumerate(args.presets):
            folder = Path(scratch) / preset
            folder.mkdir()
            preset_rows, one = seeds_rows(preset, args.seeds, folder)
            rows += preset_rows
            print("\n".join(preset_rows), flush=True)
            if index == 0 and rates * grid_seeds > 0:
                rows += grid_rows(preset, rates, grid_seeds, folder, one)
                print("\n".join(rows[-2:]), flush=True)
                drift = divergence_rows(preset, folder)
                print("\n".join(drift), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU"
    lines = [
        "## Batched members: seeds and an lr × seed grid as one model (issue #28 point 1)",
        "",
        f"`DLCOURSE_DATA_DIR=../shared/data python scripts/bench_members.py --seeds {args.seeds} "
        f"--grid {args.grid}` on {machine}. Whole commands, timed from outside, one after "
        "another; the ratio is to one run of the same preset. Difference: the largest, over "
        "members, between a batched member and the same run trained alone.",
        "",
        "| preset | what | wall time | × one run | batched vs alone |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        *drift,
    ]
    print("\n".join(lines))
    write_section("members", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
