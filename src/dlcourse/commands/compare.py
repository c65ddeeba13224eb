"""Compare two runs, sweep jobs or seed groups: what differs in their configs, in their metrics,
and for seed groups whether the difference is real (a paired t-test over their common seeds).

    dlcourse-compare outputs/runs/<A> outputs/runs/<B>
    dlcourse-compare outputs/runs/<A> outputs/runs/<B> --metric test/loss

A seed group is a run with seeds=N (dlcourse/sweeps/seeds.py). Everything is read as data: the
folders' metrics.json and .hydra/config.yaml (plain YAML, nothing built from it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from dlcourse.infrastructure.errors import UserError, clean, exit_on_user_error
from dlcourse.infrastructure.files import read_json, read_small
from dlcourse.infrastructure.loggers import flatten_hparams
from dlcourse.infrastructure.run_folder import METRICS, RECORD

IGNORED = ("seed", "seeds", "resume")  # what differs between any two runs and says nothing


def read_side(folder: Path) -> tuple[dict, dict[str, str]]:
    """A folder's metrics.json and its config, flattened (optimizer.lr: 0.1)."""
    import yaml

    if not (folder / METRICS).is_file():
        raise UserError(
            f"{folder} has no {METRICS}: pass a finished run's folder, a sweep job's or a seed "
            f"group's (dlcourse-runs lists them)"
        )
    metrics, problem = read_json(folder / METRICS)
    if metrics is None:
        raise UserError(f"{folder}: {problem}")
    try:
        config = yaml.safe_load(read_small(folder / RECORD / "config.yaml"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError):
        config = None
    flat = flatten_hparams(config) if isinstance(config, dict) else {}
    return metrics, {k: str(v) for k, v in flat.items()}


def seed_values(metrics: dict, name: str) -> dict[int, float] | None:
    """A seed group's value of `name` for each of its seeds; None for a single run."""
    group = metrics.get("seeds")
    if not isinstance(group, dict):
        return None
    seeds, spread = group.get("seeds"), (group.get("spread") or {}).get(name) or {}
    values = spread.get("values") if isinstance(spread, dict) else None
    if not isinstance(seeds, list) or not isinstance(values, list) or len(seeds) != len(values):
        return None
    pairs = zip(seeds, values)
    return {s: float(v) for s, v in pairs if isinstance(s, int) and is_number(v)}


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def verdict(
    name: str, a: dict[int, float], b: dict[int, float], higher_is_better: bool | None
) -> str:
    """A paired t-test over the seeds both groups ran (Welch's test when they share fewer than
    two), and the difference A − B with its 95 % interval, in plain words."""
    from scipy import stats

    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        differences = [a[s] - b[s] for s in common]
        test = stats.ttest_rel([a[s] for s in common], [b[s] for s in common])
        how, n = f"paired t-test over {len(common)} common seeds", len(common)
    elif len(a) >= 2 and len(b) >= 2:
        test = stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
        differences, how, n = (
            None,
            f"Welch's t-test, {len(a)} and {len(b)} seeds",
            min(len(a), len(b)),
        )
    else:
        return f"{name}: one value per side, no test; run both with seeds=5 to test the difference"
    mean_a, mean_b = sum(a.values()) / len(a), sum(b.values()) / len(b)
    difference = sum(differences) / len(differences) if differences else mean_a - mean_b
    interval = test.confidence_interval(0.95)
    half = (interval.high - interval.low) / 2
    scale, unit = (100, " points") if name.endswith("acc") else (1, "")
    shown = f"{abs(difference) * scale:.2f} ± {half * scale:.2f}{unit}"
    p = float(test.pvalue)
    if not math.isfinite(p) or p >= 0.05:
        return (
            f"{name}: not distinguishable with {n} seeds (A − B = {difference * scale:+.2f} ± "
            f"{half * scale:.2f}{unit}, p = {p:.3g}; {how})"
        )
    better = (difference > 0) == (higher_is_better is not False)
    return f"{name}: {'A' if better else 'B'} is better by {shown}, p = {p:.3g} ({how})"


def compare(first: Path, second: Path, metric: str | None = None) -> str:
    """The comparison as text: config differences, metrics side by side, the verdict."""
    metrics_a, config_a = read_side(first)
    metrics_b, config_b = read_side(second)
    lines = [f"A: {clean(first)}", f"B: {clean(second)}", "", "Config differences (A | B):"]
    keys = sorted(set(config_a) | set(config_b))
    differ = [k for k in keys if config_a.get(k) != config_b.get(k) and k not in IGNORED]
    # A record's unresolved ${...} says nothing the resolved keys do not.
    differ = [k for k in differ if not k.startswith("paths.")]
    differ = [k for k in differ if "${" not in config_a.get(k, "") + config_b.get(k, "")]
    lines += [f"  {clean(k)}: {clean(config_a.get(k, '-'))} | {clean(config_b.get(k, '-'))}"
              for k in differ] or ["  none"]  # fmt: skip
    names = [n for n in metrics_a if "/" in n and is_number(metrics_a[n])]
    names = [n for n in names if is_number(metrics_b.get(n)) and n.startswith(("val/", "test/"))]
    lines += ["", f"{'metric':<16}{'A':>10}{'B':>10}{'A − B':>10}"]
    for n in names:
        a, b = metrics_a[n], metrics_b[n]
        lines.append(f"{clean(n):<16}{a:>10.4f}{b:>10.4f}{a - b:>+10.4f}")
    monitor = metrics_a.get("monitor") if isinstance(metrics_a.get("monitor"), str) else "val/acc"
    metric = metric or f"test/{monitor.split('/', 1)[-1]}"
    if metric not in names:
        raise UserError(
            f"{metric} is not a metric of both; choose --metric from: {', '.join(names)}"
        )
    higher = (metrics_a.get("higher_is_better") or {}).get(metric.split("/", 1)[-1])
    a = seed_values(metrics_a, metric) or {-1: metrics_a[metric]}
    b = seed_values(metrics_b, metric) or {-2: metrics_b[metric]}
    return "\n".join([*lines, "", verdict(metric, a, b, higher)])


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dlcourse-compare", description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path, help="run folder, sweep job or seed group (A)")
    parser.add_argument("second", type=Path, help="run folder, sweep job or seed group (B)")
    parser.add_argument("--metric", help="the metric to test (default: test/<monitored metric>)")
    arguments = parser.parse_args(argv)
    print(compare(arguments.first, arguments.second, arguments.metric))


if __name__ == "__main__":
    main()
