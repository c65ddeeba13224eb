"""Seeds as an axis: one configuration trained with several seeds, and what the seeds say.

    dlcourse-train experiment=fast_mlp_mnist seeds=5    # seeds 42 … 46 (from `seed`), a run each
    dlcourse-train experiment=fast_mlp_mnist seeds=5 trainer.batch_members=true  # as one model
    dlcourse-train -m model=linear,mlp seeds=[1,2,3]    # in a sweep: every job runs these seeds
    dlcourse-compare outputs/runs/<A> outputs/runs/<B>  # is the difference real?

A seed group is a folder (a run's, or a sweep job's) holding one run folder per seed,
`seed=42/`, `seed=43/`, ...; each is a whole run, which every command takes (eval, predict,
resume, runs, compare). The group's metrics.json gives each metric's mean over the seeds under
the metric's own name, so that a sweeper (Optuna too) optimises the mean and the sweep report
ranks by it; its `seeds` entry holds each metric's values, standard deviation and 95 % interval
(Student's t over the seeds). `resume=<group>` continues the seeds' runs that had not finished.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from dlcourse.infrastructure.checkpoint import load_checkpoint
from dlcourse.infrastructure.config import to_plain_dict
from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.files import read_json, write_file
from dlcourse.infrastructure.run_folder import (
    CHECKPOINTS,
    LAST,
    METRICS,
    SEEDS,
    RunFolder,
    group_seeds,
    member_folder,
    read_record,
)
from dlcourse.infrastructure.schema import validate_config
from dlcourse.resume import resume_config
from dlcourse.run import hparams_metrics, train

log = logging.getLogger(__name__)

MAX_SEEDS = 1000  # more runs of one configuration than anyone waits for: a typo


def seed_list(seeds: Any, first: int) -> list[int]:
    """`seeds=5`: the five seeds from `seed` on (42 … 46); `seeds=[1,2,3]`: those seeds."""
    if isinstance(seeds, int) and not isinstance(seeds, bool) and 1 <= seeds <= MAX_SEEDS:
        return list(range(first, first + seeds))
    listed = list(seeds) if OmegaConf.is_list(seeds) or isinstance(seeds, list) else None
    if (
        listed
        and len(listed) <= MAX_SEEDS
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in listed)
        and len(set(listed)) == len(listed)
    ):
        return listed
    raise UserError(
        f"seeds={seeds!r}: give a count from 1 to {MAX_SEEDS} (seeds=5: seeds {first} to "
        f"{first + 4}) or a list of different seeds of 0 or more (seeds=[1,2,3])"
    )


def train_seeds(
    cfg: DictConfig, group: Path, resuming: bool, hparams: dict, hydra_cfg: DictConfig | None = None
) -> dict:
    """Each seed's run in its own folder inside `group` (a resumed group: the unfinished ones),
    one after the other; then the group's metrics.json and its TensorBoard summary. `hydra_cfg`:
    the command line's (written into each folder's record, as for any run)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("seeds=… runs its seeds one after the other: start it without torchrun")
    seeds = group_seeds(group) if resuming else seed_list(cfg.seeds, cfg.seed)
    validate_config(to_plain_dict(cfg))  # before the group's folder is claimed
    if not cfg.trainer.get("keep_checkpoints", True):
        raise UserError(
            "seeds=… reads each seed's curves from its checkpoint, which "
            "trainer.keep_checkpoints=false (debug=fast) removes: run one seed, or keep them"
        )
    template = copy.deepcopy(cfg)
    with open_dict(template):
        template.seeds, template.resume = None, None
    # What a resume's command line changes in the seeds' runs; not what the group started with
    # (a requeued cluster job repeats it).
    overrides = list(hydra_cfg.overrides.task) if resuming and hydra_cfg is not None else []
    started_with = read_record(group)[1] if resuming else []
    group.mkdir(parents=True, exist_ok=True)  # (Hydra has made it, for dlcourse-train)
    with RunFolder(group, resuming, OmegaConf.create(to_plain_dict(cfg)), hydra_cfg):
        if not resuming:
            write_file(group / SEEDS, f'{{"seeds": {seeds}}}\n', root=group)
        log.info("Seed group %s: %d runs, seeds %s", group, len(seeds), seeds)
        updates = (overrides, started_with)
        if cfg.trainer.get("batch_members"):
            members = train_batched(template, seeds, group, updates, hparams, hydra_cfg)
        else:
            members = [
                train_member(template, seed, group, updates, hparams, hydra_cfg) for seed in seeds
            ]
        metrics = group_metrics(members, seeds, bool(cfg.trainer.get("batch_members")))
        write_file(group / METRICS, json.dumps(metrics, indent=2) + "\n", root=group)
        log_group(group, seeds, metrics, hparams)
        log.info("Seed group %s: %s", group, spread_line(metrics, metrics.get("monitor")))
    return metrics


def train_member(
    template: DictConfig,
    seed: int,
    group: Path,
    updates: tuple[list[str], list[str]],
    hparams: dict,
    hydra_cfg: DictConfig | None,
) -> dict:
    """One seed's run: finished already (its metrics), stopped (resumed with `updates`: the
    command line's overrides and those the group started with), or new."""
    member = member_run(template, seed, group, updates, hydra_cfg)
    if isinstance(member, dict):
        return member
    cfg, folder, checkpoint, claim = member
    return train(cfg, folder, checkpoint, {**hparams, "seed": seed}, folder=claim)


def train_batched(
    template: DictConfig,
    seeds: list[int],
    group: Path,
    updates: tuple[list[str], list[str]],
    hparams: dict,
    hydra_cfg: DictConfig | None,
) -> list[dict]:
    """The seeds' runs as one batched model (trainer.batch_members=true: sweeps/members.py), but
    for those already finished; the first seed that failed is reported, as in turn."""
    from dlcourse.sweeps.members import train_members

    members = {seed: member_run(template, seed, group, updates, hydra_cfg) for seed in seeds}
    pending = [seed for seed in seeds if not isinstance(members[seed], dict)]
    if pending:
        cfgs, folders, checkpoints, claims = zip(*(members[seed] for seed in pending))
        hparams_list = [{**hparams, "seed": seed} for seed in pending]
        results = train_members(list(cfgs), list(folders), list(checkpoints), hparams_list,
                                list(claims))  # fmt: skip
        members |= dict(zip(pending, results))
    for seed in seeds:
        if isinstance(members[seed], Exception):
            raise members[seed]
    return [members[seed] for seed in seeds]


def member_run(
    template: DictConfig,
    seed: int,
    group: Path,
    updates: tuple[list[str], list[str]],
    hydra_cfg: DictConfig | None,
) -> dict | tuple[DictConfig, Path, dict | None, RunFolder]:
    """A finished seed's metrics; or what its run needs: its config, folder, the checkpoint it
    continues (None: a new run) and the claim of its folder."""
    folder = member_folder(group, seed)
    if (folder / METRICS).is_file():
        metrics, problem = read_json(folder / METRICS)
        if metrics is not None:
            return metrics
        raise UserError(f"{folder}: {problem}; move that run aside and resume the group again")
    checkpoint = None
    if (folder / CHECKPOINTS / LAST).is_file():
        cfg = copy.deepcopy(template)
        cfg.resume = str(folder)
        cfg, checkpoint = resume_config(cfg, *updates)
    else:
        cfg = copy.deepcopy(template)
        cfg.seed = seed
    log.info("Seed %d: %s", seed, folder)
    folder.mkdir(exist_ok=True)  # (the group's claim refused any link inside it)
    claim = RunFolder(
        folder, checkpoint is not None, OmegaConf.create(to_plain_dict(cfg)), hydra_cfg
    )
    return cfg, folder, checkpoint, claim


def group_metrics(members: list[dict], seeds: list[int], batched: bool = False) -> dict:
    """The mean of each metric that every seed's run reports, and its spread (in `seeds`)."""
    first = members[0]
    names = [
        name
        for name, value in first.items()
        if "/" in name and all(is_number(m.get(name)) for m in members) and is_number(value)
    ]
    spread = {name: summary([m[name] for m in members]) for name in names}
    means = {name: spread[name]["mean"] for name in names}
    kept = ("monitor", "higher_is_better", "class_names", "epochs")
    return {
        **means,
        **{key: first[key] for key in kept if key in first},
        "train_seconds": sum(m.get("train_seconds", 0.0) for m in members)
        / (
            len(members) if batched else 1  # batched: each member's is the group's wall time
        ),
        "seeds": {"seeds": seeds, "runs": [f"seed={s}" for s in seeds], "spread": spread},
    }


def summary(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the 95 % interval of the mean (Student's t); with
    one value the spread is unknown (None), not zero."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return {"mean": mean, "std": None, "low": None, "high": None, "n": n, "values": values}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "n": n,
            "values": values}  # fmt: skip


def t_quantile(degrees_of_freedom: int | float, level: float = 0.95) -> float:
    """The two-sided `level` quantile of Student's t (2.776 for 4 degrees of freedom)."""
    from scipy import stats  # imported here: scipy is slow to import

    return float(stats.t.ppf(0.5 + level / 2, degrees_of_freedom))


def spread_line(metrics: dict, name: str | None) -> str:
    """`val/acc 0.9712 ± 0.0021 (95 % interval 0.9686 … 0.9738, 5 seeds)`."""
    spread = metrics.get("seeds", {}).get("spread", {})
    test_name = f"test/{name.split('/', 1)[-1]}" if name else None
    name = test_name if test_name in spread else name
    if name not in spread:
        return f"{len(metrics.get('seeds', {}).get('seeds', []))} seeds"
    s = spread[name]
    return (
        f"{name} {s['mean']:.4f} ± {s['std']:.4f} (95 % interval {s['low']:.4f} … "
        f"{s['high']:.4f}, {s['n']} seeds)"
    )


def log_group(group: Path, seeds: list[int], metrics: dict, hparams: dict) -> None:
    """The group in TensorBoard: its mean metrics with the group's settings in HParams, and
    each epoch's mean with its 95 % interval (a margin chart in Custom Scalars)."""
    from dlcourse.infrastructure.loggers import TensorBoardLogger

    histories = [member_history(member_folder(group, seed)) for seed in seeds]
    logger = TensorBoardLogger(group)
    try:
        spread = metrics["seeds"]["spread"]
        final = {f"seeds/final/{name}": s["mean"] for name, s in spread.items()}
        final |= {f"seeds/final/{name}_std": s["std"] for name, s in spread.items() if s["n"] > 1}
        logger.log_scalars(final, 0)
        charts = {}
        for name in epoch_names(histories):
            for epoch, values in enumerate(zip(*(h[name] for h in histories)), start=1):
                s = summary(list(values))
                tags = {f"seeds/{name}": s["mean"]}
                if s["n"] > 1:
                    tags |= {f"seeds/{name}_low": s["low"], f"seeds/{name}_high": s["high"]}
                logger.log_scalars(tags, epoch)
            charts[name] = ["Margin", [f"seeds/{name}", f"seeds/{name}_low", f"seeds/{name}_high"]]
        logger.writer.add_custom_scalars(
            {f"Seed group: mean, 95 % interval ({len(seeds)} seeds)": charts}
        )
        monitor = str(metrics.get("monitor", "val/loss")).split("/", 1)[-1]  # val/acc → acc
        final_means = hparams_metrics(metrics, monitor)
        logger.log_hparams({**hparams, "seeds": len(seeds)}, final_means, 0)
    finally:
        logger.close()


def member_history(folder: Path) -> dict[str, list[float]]:
    """One seed's metrics at each epoch, from its last checkpoint (none: a classical model)."""
    history = load_checkpoint(folder / CHECKPOINTS / LAST).get("history") or []
    names = {name for entry in history for name in entry if "/" in name}
    names = {n for n in names if not n.startswith("time/")}
    return {name: [e.get(name, math.nan) for e in history] for name in sorted(names)}


def epoch_names(histories: list[dict[str, list[float]]]) -> list[str]:
    """The metrics every seed's run logged at every epoch (a run stopped early by patience has
    fewer epochs: the curves go as far as the shortest)."""
    names = set.intersection(*(set(h) for h in histories)) if histories else set()
    return sorted(n for n in names if all(all(map(math.isfinite, h[n])) for h in histories))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
