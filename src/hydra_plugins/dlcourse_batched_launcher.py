"""dlcourse's batched launcher: a sweep's jobs trained as one batched model, in this process.

    dlcourse-train -m hydra/launcher=batched experiment=fast_mlp_mnist optimizer.lr=1e-3,3e-3
    dlcourse-train -m hydra/launcher=batched hydra.launcher.members=8 optimizer.lr=0.01,0.1 seed=1,2

For sweeps over seeds and the optimizer's scalar settings (learning rate, momentum, weight
decay, ...): jobs that differ in anything else (the model, the batch size) are refused, in one
line, as a whole. Each job still gets its own folder, record, metrics and checkpoints, numbered
as Hydra's basic launcher numbers them, so the sweep report, dlcourse-runs and every other
command read it as any sweep. `members`: how many jobs train at once (null: all of the
sweeper's batch). How they train together: dlcourse/sweeps/members.py.
"""

# No `from __future__ import annotations`: Hydra loads plugins without registering them in
# sys.modules, where dataclasses look string annotations up.
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from dlcourse.infrastructure.errors import SweepError

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.dlcourse_batched_launcher.BatchedLauncher"
    members: int | None = None  # jobs trained at once; null: every job of the sweeper's batch


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf)


class BatchedLauncher(Launcher):
    def __init__(self, members: int | None = None) -> None:
        self.members = members
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context  # the task: dlcourse's own

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from dlcourse.commands.train import prepare_job, train_batched_jobs

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if self.members is not None and self.members < 1:
            raise SweepError(f"hydra.launcher.members={self.members}: give 1 or more, or null")
        size = self.members or len(job_overrides) or 1
        returns: list[JobReturn] = []
        for first in range(0, len(job_overrides), size):
            group = job_overrides[first : first + size]
            log.info("Training %d jobs as one batched model", len(group))
            # Each job is settled under its own Hydra config, as the basic launcher runs it.
            prepared = [
                self.run(overrides, initial_job_idx + first + offset, prepare_job)
                for offset, overrides in enumerate(group)
            ]
            ready = [ret for ret in prepared if is_ready(ret)]  # the others: refused
            results = train_batched_jobs([ret.return_value for ret in ready]) if ready else []
            for ret, result in zip(ready, results):
                ret.return_value = result  # a failed job's is None, as dlcourse-train's main
            returns.extend(prepared)
        return returns

    def run(self, overrides: Sequence[str], index: int, task: Any) -> JobReturn:
        log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
        sweep_config = self.hydra_context.config_loader.load_sweep_config(
            self.config, list(overrides)
        )
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = index
            sweep_config.hydra.job.num = index
        return run_job(
            hydra_context=self.hydra_context,
            task_function=task,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )


def is_ready(ret: JobReturn) -> bool:
    """A job that prepare_job settled (not one it refused, nor one that raised)."""
    return ret.status == JobStatus.COMPLETED and ret.return_value is not None
