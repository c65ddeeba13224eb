"""Train each shipped preset and record what it reached in docs/benchmarks.md.

    DLCOURSE_DATA_DIR=../shared/data python scripts/benchmark_presets.py
    python scripts/benchmark_presets.py --presets linear_mnist mlp_mnist --device cpu

Not a test: it trains on the full data (minutes on a 2-core CPU). Each preset is checked against
its target (issues #2 and #4) and its table is rewritten between its markers in the doc.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from dlcourse.infrastructure.config import config_dir, register_resolvers
from dlcourse.run import train

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC = REPO_ROOT / "docs" / "benchmarks.md"
# name: (overrides, test/acc at least, seconds of training + evaluation at most)
CLASSIFICATION = {
    "linear_mnist": (["experiment=linear_mnist"], 0.92, None),
    "mlp_mnist": (["experiment=mlp_mnist"], 0.98, None),
    "cnn_mnist": (["experiment=cnn_mnist"], 0.99, None),
    "fast_linear_mnist": (
        ["experiment=fast_linear_mnist"],
        0.92,
        2.0,
    ),  # issue #6: time to accuracy
    "fast_mlp_mnist": (["experiment=fast_mlp_mnist"], 0.98, 20.0),
    "fast_cnn_mnist": (["experiment=fast_cnn_mnist"], 0.99, 15.0),  # one epoch; issue #17
    # The lecture's pictures (issue #15): templates and filters, at little cost in accuracy.
    "mlp100_mnist": (["experiment=mlp100_mnist"], 0.975, None),
    "filters_cnn_mnist": (["experiment=filters_cnn_mnist"], 0.99, None),
    # Fashion-MNIST (issue #14), on its official test split.
    "linear_fashion_mnist": (["experiment=linear_fashion_mnist"], 0.84, None),
    "mlp_fashion_mnist": (["experiment=mlp_fashion_mnist"], 0.89, None),
    "cnn_fashion_mnist": (["experiment=cnn_fashion_mnist"], 0.93, None),
    "fast_cnn_fashion_mnist": (["experiment=fast_cnn_fashion_mnist"], 0.915, None),  # one epoch
    "template_ncc": (
        ["model=template_ncc"],
        None,
        None,
    ),  # classical baselines (issue #7): no target
    "nearest_neighbor": (["model=nearest_neighbor"], None, None),
}
INPAINTING = {
    "mlp_inpainting": 0.5,
    "conv_inpainting": 0.3,
}  # test/mse_hole at most this × mean-fill's


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def run_preset(preset: str, device: str, output_root: Path) -> dict[str, float]:
    register_resolvers()
    overrides = CLASSIFICATION[preset][0] if preset in CLASSIFICATION else [f"experiment={preset}"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"trainer.device={device}"])
    shutil.rmtree(
        output_root / preset, ignore_errors=True
    )  # a fresh run: no older events or checkpoints
    return train(cfg, output_root / preset)


def classification_row(preset: str, metrics: dict[str, float]) -> tuple[str, bool]:
    overrides, accuracy, seconds = CLASSIFICATION[preset]
    if accuracy is None:
        target, met, verdict = "— (baseline)", True, "—"
    else:
        met = metrics["test/acc"] >= accuracy and (
            seconds is None or metrics["train_seconds"] <= seconds
        )
        target = f"≥ {accuracy:.1%}" + (f" in ≤ {seconds:g} s" if seconds else "")
        verdict = "yes" if met else "NO"
    return (
        f"| `{preset}` | {' '.join(overrides)} | {metrics['epochs']} | {metrics['test/acc']:.2%} | "
        f"{target} | {verdict} | {metrics['val/acc']:.2%} | {metrics['best_epoch']} | "
        f"{metrics['train_seconds']:.1f} |"
    ), met


def inpainting_row(preset: str, metrics: dict[str, float]) -> tuple[str, bool]:
    ratio = metrics["test/mse_hole"] / metrics["baselines/test/meanfill/mse_hole"]
    met = ratio <= INPAINTING[preset]
    return (
        f"| `{preset}` | {metrics['epochs']} | {metrics['test/mse_hole']:.4f} | "
        f"{metrics['baselines/test/meanfill/mse_hole']:.4f} | "
        f"{metrics['baselines/test/unfilled/mse_hole']:.4f} | "
        f"{ratio:.3f} | ≤ {INPAINTING[preset]} | {'yes' if met else 'NO'} | "
        f"{metrics['test/psnr_hole']:.2f} | {metrics['train_seconds']:.1f} |"
    ), met


TABLES = {
    "presets": (
        "Classification presets (MNIST: issue #2; Fashion-MNIST: issue #14)",
        classification_row,
        "| preset | overrides | epochs | test/acc | target | met | val/acc | best epoch | train + "
        "eval seconds |",
    ),
    "inpainting": (
        "Inpainting presets (issue #4), on the test split",
        inpainting_row,
        "| preset | epochs | test/mse_hole | mean-fill mse_hole | unfilled mse_hole | ratio to "
        "mean-fill | target | met | test/psnr_hole (dB) | train seconds |",
    ),
}


def order(preset: str) -> int:
    return [*CLASSIFICATION, *INPAINTING].index(preset)


def write_table(name: str, rows: list[str], device: str) -> None:
    title, _, header = TABLES[name]
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = "\n".join(
        [
            begin,
            f"Machine: {machine()}; device `{device}`.",
            "Command: `DLCOURSE_DATA_DIR=../shared/data python scripts/benchmark_presets.py`",
            "",
            header,
            "|" + " --- |" * (header.count("|") - 1),
            *rows,
            end,
        ]
    )
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if begin in text:  # keep the rows of presets that were not run this time
        run = {row.split("`")[1] for row in rows}
        old_rows = [
            line
            for line in text[text.index(begin) : text.index(end)].splitlines()
            if line.startswith("| `")
        ]
        rows = sorted(
            [*rows, *(r for r in old_rows if r.split("`")[1] not in run)],
            key=lambda r: order(r.split("`")[1]),
        )
        section = (
            section.split(header)[0]
            + header
            + "\n|"
            + " --- |" * (header.count("|") - 1)
            + "\n"
            + "\n".join(rows)
            + "\n"
            + end
        )
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text += f"\n## {title}\n\n{section}\n"
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    presets = [*CLASSIFICATION, *INPAINTING]
    parser.add_argument("--presets", nargs="+", default=presets, choices=presets)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "outputs" / "benchmarks")
    args = parser.parse_args()

    rows: dict[str, list[str]] = {"presets": [], "inpainting": []}
    all_met = True
    for preset in args.presets:
        metrics = run_preset(preset, args.device, args.output_dir)
        table = "presets" if preset in CLASSIFICATION else "inpainting"
        row, met = TABLES[table][1](preset, metrics)
        rows[table].append(row)
        all_met &= met
        print(row, flush=True)
    for table, table_rows in rows.items():
        if table_rows:
            write_table(table, table_rows, args.device)
    print(f"Wrote {DOC}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
