"""Train a model from a Hydra config.

    dlcourse-train                                      # the defaults in configs/train.yaml
    dlcourse-train model=cnn optimizer.lr=0.05 trainer.epochs=3
    dlcourse-train experiment=cnn_mnist
    dlcourse-train -m model=linear,mlp optimizer.lr=0.01,0.1   # a sweep (Hydra multirun)
    dlcourse-train resume=outputs/runs/<run>            # continue a stopped run in its folder
    dlcourse-train experiment=fast_mlp_mnist seeds=5    # five seeds, a run each (sweeps/seeds.py)
    dlcourse-train -m hydra/launcher=batched optimizer.lr=0.01,0.03 seed=1,2  # one batched model
    python -m dlcourse.commands.train --help            # the config groups and their options

The run itself is `dlcourse.run.train`; this module only wraps it for Hydra: it settles the
config (a resume's comes from its checkpoint), hands `train` the run folder to claim, and
reports how the run ended. It imports torch only once a run starts, so that `--help` answers at
once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dlcourse.infrastructure.cluster import launched_rank, leave_to_slurm, under_slurm
from dlcourse.infrastructure.command_line import resume_command
from dlcourse.infrastructure.config import (
    COMPONENTS,
    config_dir,
    is_rank_scratch,
    register_resolvers,
    resumes_in_place,
)
from dlcourse.infrastructure.errors import (
    FinalTestInterrupted,
    SweepError,
    TrainingInterrupted,
    UserError,
    errors_as_messages,
)
from dlcourse.infrastructure.interrupt import FROM_PARENT, stop_with_the_sweep
from dlcourse.infrastructure.run_folder import (
    FAILED,
    LOG_FORMAT,
    STOP_MARKER,
    NullRunFolder,
    RunFolder,
    discard_if_empty,
    group_seeds,
    read_record,
)
from dlcourse.sweeps.status import record_failure

if TYPE_CHECKING:  # imported when a run starts: torch comes with them
    from dlcourse.sweeps.search import Pruned
    from dlcourse.trainer import Pruning

log = logging.getLogger("dlcourse.train")

register_resolvers()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | Pruned | None:
    """One run, or one job of a sweep: settle its config, then `dlcourse.run.train` claims its
    folder and trains. Sweepers (e.g. Optuna) optimise what it returns."""
    from dlcourse.run import train  # torch is imported from here on
    from dlcourse.sweeps.seeds import train_seeds

    job = Job(HydraConfig.get())
    with errors_as_messages(), job.ending():
        if job.sweep_is_stopping():
            return None
        cfg, checkpoint, folder = job.settle(cfg)
        if cfg.get("seeds") is not None:  # one run per seed, in the group's folder
            metrics = train_seeds(cfg, job.run_dir, job.resuming, job.hparams(cfg), job.hydra_cfg)
        else:
            metrics = train(cfg, job.run_dir, checkpoint, job.hparams(cfg), job.trial(cfg), folder)
        return job.result(cfg, metrics)
    return None  # stopped, or a sweep's job that failed: said so, and recorded


@dataclass
class PreparedJob:
    """A sweep's job, settled, to be trained with others (hydra/launcher=batched)."""

    job: Job
    cfg: DictConfig
    checkpoint: dict | None
    folder: RunFolder | NullRunFolder
    hparams: dict


def prepare_job(cfg: DictConfig) -> PreparedJob | None:
    """hydra/launcher=batched calls this in each job's place (under the job's Hydra config):
    the job settled as `main` settles it; `train_batched_jobs` then trains all of them. None:
    the job does not run (refused: said so and recorded, as `main` does)."""
    job = Job(HydraConfig.get())
    with errors_as_messages(), job.ending():
        if job.sweep_is_stopping():
            return None
        if cfg.get("seeds") is not None:
            raise UserError("hydra/launcher=batched sweeps seeds itself: sweep seed=42,43,…")
        cfg, checkpoint, folder = job.settle(cfg)
        OmegaConf.resolve(cfg)  # now, while ${hydra:…} means this job's Hydra config
        if OmegaConf.select(job.hydra_cfg, "sweeper.pruner", default=None) is not None:
            log.warning("hydra/launcher=batched: the pruner is not asked; no job is pruned")
        return PreparedJob(job, cfg, checkpoint, folder, job.hparams(cfg))
    return None


def train_batched_jobs(jobs: list[PreparedJob]) -> list[object]:
    """The jobs trained as one batched model (dlcourse/sweeps/members.py); each job's result,
    as `main` would return it (a job that failed: None, its failed.json says why)."""
    from dlcourse.sweeps.members import train_members

    try:
        # fmt: off
        results = train_members([j.cfg for j in jobs], [j.job.run_dir for j in jobs],
                                [j.checkpoint for j in jobs], [j.hparams for j in jobs],
                                [j.folder for j in jobs])
        # fmt: on
    except (SweepError, KeyboardInterrupt):
        raise
    except TrainingInterrupted as stop:
        log.warning("Stopped: %s. Resume each job with dlcourse-train resume=<its folder>.", stop)
        sys.exit(stop.exit_code)
    except Exception as error:  # the group refused (its members cannot be batched), or failed
        results = [error] * len(jobs)
    returns: list[object] = []
    for prepared, result in zip(jobs, results):
        if isinstance(result, Exception):
            record_failure(prepared.job.run_dir, result, prepared.job.overrides)
            returns.append(None)
        else:
            returns.append(prepared.job.result(prepared.cfg, result))
    return returns


class Job:
    """This process's part of a `dlcourse-train`: the run (or sweep job) Hydra set up."""

    def __init__(self, hydra_cfg: DictConfig) -> None:
        self.hydra_cfg = hydra_cfg
        self.run_dir = Path(hydra_cfg.runtime.output_dir)
        self.overrides = list(hydra_cfg.overrides.task)
        self.in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
        self.resuming = False
        if launched_rank() > 0:  # under torchrun rank 0 speaks for all; the others only warn
            logging.getLogger().setLevel(logging.WARNING)
        if os.environ.get(FROM_PARENT):  # jobs side by side: whose line is whose
            tag_console(f"[job {hydra_cfg.job.num}]")

    @contextlib.contextmanager
    def ending(self) -> Iterator[None]:
        """A run stopped by a signal says how to resume it (under SLURM: requeued) and exits with
        the signal's status; a sweep's job that fails is recorded and the sweep goes on. A run
        refused before it wrote anything leaves no empty folder."""
        try:
            yield
        except TrainingInterrupted as stop:
            report_stop(stop, self.run_dir)
            if under_slurm():  # requeue (or see that SLURM has), then wait to be ended
                leave_to_slurm(stop.signal_number, launched_rank())
            if not os.environ.get(FROM_PARENT):  # beside others, the sweep's process ends it
                sys.exit(stop.exit_code)
        except Exception as error:
            if isinstance(error, UserError):
                discard_if_empty(self.run_dir)
            # rank 0 fails too, and records it: one record per job
            if not self.in_sweep or isinstance(error, SweepError) or launched_rank() > 0:
                raise
            record_failure(self.run_dir, error, self.overrides)  # the trial counts as failed

    def sweep_is_stopping(self) -> bool:
        """A job that starts while its sweep stops does not run."""
        if launched_rank() > 0 and is_rank_scratch(self.run_dir):
            # torchrun: rank 0 owns the run folder; Hydra gave this rank a scratch one. (A folder
            # the user named, and SLURM's tasks' job folder, are shared: rank 0 claims it.)
            discard_if_empty(self.run_dir)
        if os.environ.get(FROM_PARENT) and (self.run_dir.parent / STOP_MARKER).exists():
            discard_if_empty(self.run_dir)
            return True
        stop_with_the_sweep(self.run_dir)  # a job in a worker process ends when its sweep does
        return False

    def settle(self, cfg: DictConfig) -> tuple[DictConfig, dict | None, RunFolder]:
        """The config (a resume's comes from its checkpoint), the checkpoint it continues (None:
        a new run), and the run folder to claim (rank 0's; the others follow it)."""
        from dlcourse.resume import run_config

        cfg, checkpoint = run_config(cfg, self.overrides, self.run_dir)
        # A checkpoint outside any run folder continues in this new folder, as a new run would.
        resumed = checkpoint is not None or group_seeds(cfg.get("resume")) is not None
        self.resuming = resumed and (
            launched_rank() > 0 or resumes_in_place(cfg.resume, self.run_dir)
        )
        if launched_rank() > 0:
            return cfg, checkpoint, NullRunFolder()
        return cfg, checkpoint, RunFolder(self.run_dir, self.resuming, cfg, self.hydra_cfg)

    def hparams(self, cfg: DictConfig) -> dict:
        """A resume shows what the run was started with (its first record), not its defaults."""
        if self.resuming:
            choices, started_with = read_record(self.run_dir)
        else:
            choices, started_with = self.hydra_cfg.runtime.choices, self.overrides
        return hparams_of(cfg, choices, started_with, self.hydra_cfg.mode)

    def trial(self, cfg: DictConfig) -> Pruning:
        """The Optuna trial that a search's job reports to (rank 0 reports, for every rank)."""
        from dlcourse.sweeps.search import job_trial
        from dlcourse.trainer import NeverPrune

        if not self.in_sweep or launched_rank() > 0:
            return NeverPrune()
        return job_trial(self.hydra_cfg, cfg.get("optimized_metric")) or NeverPrune()

    def result(self, cfg: DictConfig, metrics: dict) -> float | list[float] | Pruned | None:
        """The metric the sweeper optimises (a list of them: one per objective); a pruned job
        says where it stopped."""
        from dlcourse.sweeps.search import Pruned

        if launched_rank() == 0:  # a job that a requeue finished is finished: no earlier failure
            (self.run_dir / FAILED).unlink(missing_ok=True)
        wanted = cfg.get("optimized_metric")
        if OmegaConf.is_list(wanted):  # several objectives (hydra.sweeper.direction: a list)
            return [metrics.get(name) for name in wanted]
        value = metrics.get(wanted or "")
        if "pruned_at_epoch" in metrics:
            return Pruned(metrics["pruned_at_epoch"], value)
        return value


def hparams_of(cfg: DictConfig, choices: Mapping, overrides: list[str], mode: RunMode) -> dict:
    """What TensorBoard's HParams tab shows for this run: in a sweep, the settings it varies;
    else the config groups chosen (model=mlp, ...), the command line's settings and a few core
    ones (see dlcourse.infrastructure.loggers.run_hparams)."""
    from dlcourse.infrastructure.config import SWEPT_KEYS, to_plain_dict
    from dlcourse.infrastructure.loggers import CORE_SETTINGS, run_hparams

    config = to_plain_dict(cfg)
    groups = ("experiment", "mask", *COMPONENTS)
    choices = {g: c for g, c in choices.items() if g in groups and c is not None}
    swept = [key for key in os.environ.get(SWEPT_KEYS, "").split(",") if key]
    if mode == RunMode.MULTIRUN and swept:
        return run_hparams(config, {g: c for g, c in choices.items() if g in swept}, swept)
    chosen = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    return run_hparams(config, choices, [*CORE_SETTINGS, *chosen])


def tag_console(tag: str) -> None:
    """Start each console line with `tag` (the run's train.log, opened later, is its own)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"{tag}{LOG_FORMAT}"))


def report_stop(stop: TrainingInterrupted, run_dir: Path) -> None:
    """Say how to continue, in a command that pastes safely into a shell."""
    command = resume_command(run_dir)
    message = "Stopped: %s. Resume with:\n  %s"
    if isinstance(stop, FinalTestInterrupted):
        message = "Stopped: %s. Training had finished; run its final test with:\n  %s"
    log.warning(message, stop, command)


if __name__ == "__main__":
    from dlcourse.infrastructure.command_line import quote_paths, resume_arguments

    sys.argv[1:] = quote_paths(resume_arguments(sys.argv[1:]))
    main()
