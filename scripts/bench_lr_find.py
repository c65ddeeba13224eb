"""Does the learning-rate finder's suggestion train well? Against the preset's own rate and a
small sweep around it, on an MNIST and a Fashion-MNIST preset.

    DLCOURSE_DATA_DIR=../shared/data python scripts/bench_lr_find.py
        [--presets fast_mlp_mnist mlp_fashion_mnist] [--factors 0.1 0.3 1 3 10]

For each preset: `dlcourse-lr-find experiment=<preset>` (timed from outside), then
`dlcourse-train experiment=<preset> optimizer.lr=<lr>` at the suggestion and at the preset's lr
times each factor (factor 1: the preset itself), one after the other, seed 42 each. Writes the
`lr_find` section of docs/benchmarks.md (issue #26 point 3). Not a test: it trains on real data.
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

import yaml
from bench import write_section  # scripts/bench.py, beside this file

BIN = Path(sys.executable).parent
RULES = ("valley", "steep")  # dlcourse/lr_finder.py's, in lr_find.json's "suggestions"
PRESETS = Path(__file__).resolve().parents[1] / "configs" / "experiment"


def run(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def test_accuracy(preset: str, lr: float, folder: Path) -> float:
    command = [str(BIN / "dlcourse-train"), f"experiment={preset}", f"optimizer.lr={lr:.3g}"]
    run([*command, f"hydra.run.dir={folder}"])
    return json.loads((folder / "metrics.json").read_text())["test/acc"]


def bench_preset(preset: str, factors: list[float], scratch: Path) -> str:
    own = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())["optimizer"]["lr"]
    seconds = run([str(BIN / "dlcourse-lr-find"), f"experiment={preset}",
                   f"hydra.run.dir={scratch / 'find'}"])  # fmt: skip
    found = json.loads((scratch / "find" / "lr_find.json").read_text())
    sweep = {own * f: test_accuracy(preset, own * f, scratch / f"lr{f}") for f in factors}
    best = max(sweep, key=sweep.get)
    cells = [f"{own:g} → {100 * sweep[own]:.2f}"]
    for rule in RULES:
        lr = float(f"{found['suggestions'][rule]:.3g}")  # as the printed command has it
        accuracy = test_accuracy(preset, lr, scratch / rule)
        cells.append(
            f"{lr:.3g} → {100 * accuracy:.2f} ({100 * (accuracy - sweep[own]):+.2f} / "
            f"{100 * (accuracy - sweep[best]):+.2f})"
        )
    cells.append(f"{best:.3g} → {100 * sweep[best]:.2f}")
    print(preset, cells, sweep, flush=True)
    steps = len(found["learning_rates"])
    return f"| {preset} | {' | '.join(cells)} | {steps} steps, {seconds:.1f} s |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["fast_mlp_mnist", "mlp_fashion_mnist"])
    parser.add_argument("--factors", nargs="+", type=float, default=[0.1, 0.3, 1.0, 3.0, 10.0])
    args = parser.parse_args()
    if not os.environ.get("DLCOURSE_DATA_DIR"):
        sys.exit("set DLCOURSE_DATA_DIR to the folder holding MNIST (../shared/data)")
    rows = []
    for preset in args.presets:
        with tempfile.TemporaryDirectory() as scratch:
            rows.append(bench_preset(preset, args.factors, Path(scratch)))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU"
    factors = ", ".join(f"{f:g}" for f in args.factors)
    lines = [
        "## Learning-rate finder (issue #26)",
        "",
        f"`DLCOURSE_DATA_DIR=../shared/data python scripts/bench_lr_find.py` on {machine}: "
        "`dlcourse-lr-find experiment=<preset>` (fastai's range 1e-7 … 10 in 100 steps, stopped "
        "at 4× the least smoothed loss), then one run at each rule's suggestion and a sweep of "
        f"the preset's lr × {factors}, seed 42 each. Test accuracy %; differences in points.",
        "",
        "| preset | preset's lr → acc | valley rule → acc (− preset / − best) | "
        "steep rule → acc (− preset / − best) | best of the sweep → acc | finder |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    print("\n".join(lines))
    write_section("lr_find", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
