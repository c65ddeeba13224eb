"""Train each shipped MNIST preset and record what it reached in docs/benchmarks.md.

    DLCOURSE_DATA_DIR=../shared/data python scripts/benchmark_presets.py
    python scripts/benchmark_presets.py --presets linear_mnist mlp_mnist --device cpu

Not a test: it trains on the full data (minutes on a 2-core CPU). Each preset is checked against
its accuracy target from issue #2 and the table is rewritten between the markers in the doc.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from dlcourse.config import config_dir, register_resolvers
from dlcourse.train import train

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC = REPO_ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- presets:begin -->", "<!-- presets:end -->"
TARGETS = {"linear_mnist": 0.92, "mlp_mnist": 0.98, "cnn_mnist": 0.99}  # test accuracy


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def run_preset(preset: str, device: str, output_root: Path) -> dict[str, float]:
    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={preset}", f"trainer.device={device}"])
    return train(cfg, output_root / preset)


def write_table(rows: list[str], device: str) -> None:
    section = "\n".join([
        BEGIN,
        f"Machine: {machine()}; device `{device}`.",
        "Command: `DLCOURSE_DATA_DIR=../shared/data python scripts/benchmark_presets.py`",
        "",
        "| preset | epochs | test/acc | target | met | val/acc | best epoch | train seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        END,
    ])
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text += f"\n## MNIST presets (issue #2)\n\n{section}\n"
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "outputs" / "benchmarks")
    args = parser.parse_args()

    rows, all_met = [], True
    for preset in args.presets:
        metrics = run_preset(preset, args.device, args.output_dir)
        met = metrics["test/acc"] >= TARGETS[preset]
        all_met &= met
        rows.append(
            f"| `{preset}` | {metrics['epochs']} | {metrics['test/acc']:.2%} | ≥ {TARGETS[preset]:.0%} | "
            f"{'yes' if met else 'NO'} | {metrics['val/acc']:.2%} | {metrics['best_epoch']} | "
            f"{metrics['train_seconds']:.1f} |"
        )
        print(rows[-1], flush=True)
    write_table(rows, args.device)
    print(f"Wrote {DOC}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
