"""Train a model from a Hydra config.

    dlcourse-train                                      # the defaults in configs/train.yaml
    dlcourse-train model=cnn optimizer.lr=0.05 trainer.epochs=3
    dlcourse-train experiment=cnn_mnist
    dlcourse-train -m model=linear,mlp optimizer.lr=0.01,0.1   # a sweep (Hydra multirun)
    dlcourse-train resume=outputs/runs/<run>            # continue a stopped run in its folder
    python -m dlcourse.train --help                     # the config groups and their options

The run itself is `dlcourse.run.train`; this module only wraps it for Hydra: it settles the
config (a resume's comes from its checkpoint), claims the run folder, and reports how the run
ended. It imports torch only once a run starts, so that `--help` answers at once.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dlcourse.cluster import launched_rank, leave_to_slurm, under_slurm
from dlcourse.config import config_dir, is_rank_scratch, register_resolvers, resumes_in_place
from dlcourse.errors import SweepError, UserError, exit_on_user_error
from dlcourse.interrupt import FROM_PARENT, STOP_MARKER, FinalTestInterrupted, TrainingInterrupted
from dlcourse.job_folders import FAILED
from dlcourse.sweep import record_failure

log = logging.getLogger("dlcourse.train")

register_resolvers()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        metrics = run(cfg, list(hydra_cfg.overrides.task), hydra_cfg, run_dir)
    except TrainingInterrupted as stop:
        report_stop(stop, run_dir)
        if under_slurm():  # requeue (or see that SLURM has), then wait to be ended
            leave_to_slurm(stop.signal_number, launched_rank())
        if os.environ.get(FROM_PARENT):  # a job beside others: the sweep's process ends the sweep
            return None
        sys.exit(stop.exit_code)
    except Exception as error:
        if hydra_cfg.mode != RunMode.MULTIRUN or isinstance(error, SweepError):
            raise
        if launched_rank() > 0:  # rank 0 fails too, and records it: one record per job
            raise
        # One bad job must not end the sweep.
        record_failure(run_dir, error, list(hydra_cfg.overrides.task))
        return None  # a sweeper such as Optuna counts the trial as failed
    if launched_rank() == 0:  # a job that a requeue finished is finished: no earlier failure
        (run_dir / FAILED).unlink(missing_ok=True)
    # Sweepers (e.g. Optuna) maximise what the task function returns.
    value = metrics.get(cfg.get("optimized_metric") or "", None)
    if "pruned_at_epoch" in metrics:
        from dlcourse.search import Pruned

        return Pruned(metrics["pruned_at_epoch"], value)
    return value


def run(
    cfg: DictConfig, overrides: list[str], hydra_cfg: DictConfig, run_dir: Path
) -> dict[str, float]:
    """Settle the config (a resume's comes from its checkpoint), claim the folder, train."""
    from dlcourse.interrupt import stop_with_the_sweep
    from dlcourse.resume import run_config  # torch is imported from here on
    from dlcourse.run import train
    from dlcourse.run_folder import NullRunFolder, RunFolder, discard_if_empty
    from dlcourse.runs import read_record
    from dlcourse.search import NoTrial, job_trial

    if launched_rank() > 0 and is_rank_scratch(run_dir):
        # torchrun: rank 0 owns the run folder; Hydra gave this rank a scratch one. (A folder the
        # user named, and SLURM's tasks' job folder, are shared: rank 0 is about to claim it.)
        discard_if_empty(run_dir)
    if os.environ.get(FROM_PARENT) and (run_dir.parent / STOP_MARKER).exists():
        discard_if_empty(run_dir)  # the sweep is stopping: this job does not start
        return {}
    stop_with_the_sweep(run_dir)  # a job in a worker process ends when its sweep is killed
    try:
        cfg, checkpoint = run_config(cfg, overrides, run_dir)
        # A checkpoint outside any run folder continues in this new folder, as a new run would.
        # (Ranks other than 0 follow rank 0's folder.)
        resuming = checkpoint is not None and (
            launched_rank() > 0 or resumes_in_place(cfg.resume, run_dir)
        )
    except UserError:
        discard_if_empty(run_dir)  # refused before anything was written: leave no empty run folder
        raise
    folder = RunFolder(run_dir, resuming) if launched_rank() == 0 else NullRunFolder()
    with folder:
        folder.record(cfg, hydra_cfg)
        # A resume shows what the run was started with (its first record), not its own defaults.
        choices, started_with = (
            read_record(run_dir) if resuming else (hydra_cfg.runtime.choices, overrides)
        )
        hparams = hparams_of(cfg, choices, started_with, hydra_cfg.mode)
        searched = hydra_cfg.mode == RunMode.MULTIRUN and launched_rank() == 0
        trial = job_trial(hydra_cfg, cfg.get("optimized_metric")) if searched else NoTrial()
        return train(cfg, run_dir, checkpoint, hparams, trial)


def hparams_of(cfg: DictConfig, choices: Mapping, overrides: list[str], mode: RunMode) -> dict:
    """What TensorBoard's HParams tab shows for this run: in a sweep, the settings it varies;
    else the config groups chosen (model=mlp, ...), the command line's settings and a few core
    ones (see dlcourse.loggers.run_hparams)."""
    from dlcourse.config import SWEPT_KEYS, to_plain_dict
    from dlcourse.loggers import CORE_SETTINGS, run_hparams

    config = to_plain_dict(cfg)
    groups = ("experiment", "model", "dataset", "mask", "loss", "optimizer", "scheduler")
    choices = {g: c for g, c in choices.items() if g in groups and c is not None}
    swept = [key for key in os.environ.get(SWEPT_KEYS, "").split(",") if key]
    if mode == RunMode.MULTIRUN and swept:
        return run_hparams(config, {g: c for g, c in choices.items() if g in swept}, swept)
    chosen = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    return run_hparams(config, choices, [*CORE_SETTINGS, *chosen])


def report_stop(stop: TrainingInterrupted, run_dir: Path) -> None:
    """Say how to continue, in a command that pastes safely into a shell."""
    from dlcourse.run import shortest_path

    folder = shortest_path(run_dir)
    command = f"dlcourse-train {shell_quote('resume=' + hydra_quote(folder))}"
    message = "Stopped: %s. Resume with:\n  %s"
    if isinstance(stop, FinalTestInterrupted):
        message = "Stopped: %s. Training had finished; run its final test with:\n  %s"
    log.warning(message, stop, command)


def shell_quote(word: str) -> str:
    """`word` for a POSIX shell: as it is when safe, in double quotes when only Hydra's single
    quotes need protecting (the common case), else shlex's single-quote form."""
    if shlex.quote(word) == word or not re.search(r'[$`"\\!]', word):
        return word if shlex.quote(word) == word else f'"{word}"'
    return shlex.quote(word)


def hydra_quote(value: str) -> str:
    """A value as Hydra's override grammar reads it back verbatim: quoted when it holds
    characters the grammar gives a meaning to (spaces, brackets, quotes, $, ...)."""
    if all(c.isalnum() or c in "/._-+:@%~" for c in value):
        return value
    # Inside quotes, Hydra reads \' as a quote, and \\ as a backslash only before a quote.
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


if __name__ == "__main__":
    from dlcourse.config import resume_arguments

    sys.argv[1:] = resume_arguments(sys.argv[1:])
    main()
