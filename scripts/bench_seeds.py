"""Is one MNIST preset really better than another? Five seeds each, and dlcourse-compare's verdict.

    DLCOURSE_DATA_DIR=../shared/data python scripts/bench_seeds.py [--seeds 5]
        [--presets fast_mlp_mnist fast_linear_mnist]

Runs `dlcourse-train experiment=<preset> seeds=N` for each of the two presets, one after the
other, each timed from outside as a whole command (what a user waits for), then
`dlcourse-compare` on the two seed groups (a paired t-test over their common seeds). Writes the
`seeds` section of docs/benchmarks.md (issue #26 point 2). Not a test: it trains on real MNIST.
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


def seed_group(preset: str, seeds: int, folder: Path) -> tuple[dict, float]:
    command = [str(BIN / "dlcourse-train"), f"experiment={preset}", f"seeds={seeds}"]
    command.append(f"hydra.run.dir={folder}")
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((folder / "metrics.json").read_text()), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--presets", nargs=2, default=["fast_mlp_mnist", "fast_linear_mnist"])
    args = parser.parse_args()
    if not os.environ.get("DLCOURSE_DATA_DIR"):
        sys.exit("set DLCOURSE_DATA_DIR to the folder holding MNIST (../shared/data)")
    rows, folders = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for preset in args.presets:
            folder = Path(scratch) / preset
            metrics, seconds = seed_group(preset, args.seeds, folder)
            spread = metrics["seeds"]["spread"]["test/acc"]
            values = ", ".join(f"{100 * v:.2f}" for v in spread["values"])
            rows.append(
                f"| {preset} | {100 * spread['mean']:.2f} ± {100 * spread['std']:.2f} | "
                f"{100 * spread['low']:.2f} … {100 * spread['high']:.2f} | {values} | "
                f"{seconds:.1f} s |"
            )
            folders.append(folder)
        command = [str(BIN / "dlcourse-compare"), *map(str, folders)]
        compared = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    verdict = compared.strip().splitlines()[-1]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU"
    lines = [
        "## Seeds: is the difference real? (issue #26)",
        "",
        f"`DLCOURSE_DATA_DIR=../shared/data python scripts/bench_seeds.py --seeds {args.seeds}` "
        f"on {machine}: each preset trained with seeds={args.seeds} (seeds 42 …), one command "
        "each, timed from outside; then `dlcourse-compare` of the two seed groups.",
        "",
        "| preset | test acc % (mean ± std) | 95 % interval | per seed | wall time |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"dlcourse-compare (A = {args.presets[0]}, B = {args.presets[1]}): {verdict}",
    ]
    print("\n".join(lines))
    write_section("seeds", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
