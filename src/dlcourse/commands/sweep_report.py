"""Compare the jobs of a sweep: report.md, report.csv and report.png in its folder.

dlcourse-sweep-report outputs/multirun/<sweep> [--metric val/acc] [--mode max]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlcourse.infrastructure.errors import exit_on_user_error
from dlcourse.sweeps.report import report


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="dlcourse-sweep-report", description="Compare the jobs of a sweep."
    )
    parser.add_argument("sweep_dir", type=Path, help="outputs/multirun/<sweep>")
    parser.add_argument(
        "--metric", help="metrics.json key to sort by (default: val/acc, or val/mse_hole)"
    )
    parser.add_argument("--mode", choices=["max", "min"], help="which direction is better")
    args = parser.parse_args(argv)
    print(report(args.sweep_dir, args.metric, args.mode))
    print(f"Wrote report.md, report.csv and the pictures in {args.sweep_dir}")


if __name__ == "__main__":
    main()
