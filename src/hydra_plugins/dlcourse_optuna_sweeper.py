"""dlcourse's Optuna sweeper (Optuna 4/5), which Hydra finds here in the `hydra_plugins`
namespace: its settings and options, and the search itself.

    dlcourse-train hparams_search=mnist_optuna                            # TPE
    dlcourse-train hparams_search=mnist_optuna hydra/sweeper/pruner=median  # with pruning
    dlcourse-train hparams_search=mnist_optuna hydra/sweeper/sampler=random launcher=parallel

The sweeper asks Optuna for trials, turns each into a job's overrides (`hydra.sweeper.params`
uses Hydra's sweep syntax: `choice(...)`, `interval(...)`, `tag(log, interval(...))`,
`range(...)`) and tells Optuna each job's outcome. Its settings, defaults and the meaning of each
sweep are those of Hydra's official optuna sweeper (hydra-optuna-sweeper 1.3, which pins
optuna < 3), so a config written for it means the same here (tests/test_official_optuna_sweeper.py
runs its tests); dlcourse's presets (configs/hparams_search) keep the study in the sweep folder
(`storage: journal`), so the same command run again continues it; job N is trial N. What a job
does with its trial (report, prune) is in dlcourse/sweeps/search.py; the study across runs (its
lock, trials a killed search left running) in dlcourse/sweeps/study.py. Hydra imports every
plugin at each start-up, so Optuna is imported only once a search runs.
"""

# No `from __future__ import annotations`: Hydra loads plugins without registering them in
# sys.modules, where dataclasses look string annotations up; OmegaConf needs real types too.
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig, OmegaConf

from dlcourse.infrastructure.errors import SweepError
from dlcourse.infrastructure.run_folder import JOURNAL
from dlcourse.sweeps.options import MOTPE_REMOVED, PRUNER_OPTIONS, SAMPLER_OPTIONS
from dlcourse.sweeps.search import (
    SAMPLERS,
    build_from,
    build_pruner,
    directions_of,
    open_storage,
    repair_journal,
)
from dlcourse.sweeps.space import grid, search_space
from dlcourse.sweeps.study import (
    consecutive,
    count_finished,
    settle_unfinished,
    study_lock,
    tell,
    write_results,
)

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.dlcourse_optuna_sweeper.DlcourseOptunaSweeper"
    # The sampler and pruner stay configs: the sweeper builds them (a grid needs its points).
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING  # from the defaults above (MISSING: merged without replacing them)
    pruner: Any = MISSING
    # The official sweeper's fields and defaults: a config written for it means the same here.
    direction: Any = "minimize"  # or maximize; a list of them: several objectives (a Pareto front)
    # null: a new study in memory; journal: optuna.journal in the sweep folder, which a rerun
    # continues and jobs in other processes report to (pruning); sqlite: optuna.db there; a URL.
    storage: Any = None
    study_name: str | None = None  # null: Optuna names a new study
    n_trials: int = 20  # the study's size: a rerun of a kept study runs the trials still missing
    n_jobs: int = 2  # trials asked for, launched and told at once (launcher=parallel, SLURM)
    max_failure_rate: float = 0.0  # a batch (n_jobs) with a larger share failed stops the search
    params: dict[str, str] | None = None  # key: Hydra sweep, e.g. choice(1, 2)
    custom_search_space: str | None = None  # a function(config, trial) that suggests more


store = ConfigStore.instance()
store.store(
    group="hydra/sweeper", name="dlcourse_optuna", node=OptunaSweeperConf, provider="dlcourse"
)
for name, node in SAMPLER_OPTIONS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="dlcourse")
for name, node in PRUNER_OPTIONS.items():
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="dlcourse")


class DlcourseOptunaSweeper(Sweeper):
    """Ask → launch a batch of `n_jobs` jobs → tell, until the study holds `n_trials` trials."""

    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: dict[str, str] | None,
        custom_search_space: str | None = None,
    ) -> None:
        self.sampler_config, self.pruner_config = sampler, pruner
        self.directions = directions_of(direction)
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        if not 0.0 <= max_failure_rate <= 1.0:
            raise SweepError(f"max_failure_rate={max_failure_rate}: give a share from 0.0 to 1.0")
        self.max_failure_rate = max_failure_rate
        if storage is not None and study_name is None:
            raise SweepError(
                f"hydra.sweeper.storage={storage} keeps the study, which a rerun and the jobs "
                "find by its name: give hydra.sweeper.study_name (or storage: null, a new study "
                "in memory)"
            )
        self.params = dict(params or {})
        self.custom_search_space = custom_search_space

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def sweep(self, arguments: list[str]) -> None:
        space, fixed = search_space(self.params, arguments)
        extend = search_space_extender(self.custom_search_space)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with study_lock(self.sweep_dir):  # one search at a time continues a study
            study = self.open_study(space)
            self.continue_unfinished(study, space, fixed)
            done = count_finished(study)
            to_go = self.n_trials - done
            if done:  # a kept study, continued: the official sweeper would run n_trials more
                log.warning(
                    "Study %s already holds %d finished trials: n_trials=%d is the study's size "
                    "here, not trials to add (as Hydra's official sweeper counts).",
                    study.study_name, done, self.n_trials,
                )  # fmt: skip
            log.info("Study %s in %s: %d trials to go.", study.study_name, self.sweep_dir, to_go)
            while to_go > 0:
                trials = [study.ask(space) for _ in range(min(self.n_jobs, to_go))]
                for trial in trials:
                    if extend is not None:
                        extend(self.config, trial)
                numbers = [trial.number for trial in trials]
                if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
                    raise SweepError(
                        f"study {study.study_name} got trials {numbers} from another sweep at the "
                        "same time; run one sweep per study (or give each its own hydra.sweep.dir)"
                    )
                self.check_failures(self.launch(study, trials, space, fixed), len(trials))
                to_go -= len(trials)
            write_results(study, self.sweep_dir)

    def check_failures(self, failures: list[str], batch: int) -> None:
        """Stop the search when a larger share of a batch failed than max_failure_rate allows
        (as the official sweeper counts: per batch of n_jobs trials), naming the first failure."""
        if failures and len(failures) / batch > self.max_failure_rate:
            raise SweepError(
                f"{len(failures)} of a batch of {batch} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate} allows (1.0: go on "
                f"whatever fails). The first: {failures[0]}"
            )

    def open_study(self, space: dict) -> Any:
        """The study, created or continued; a journal that a kill cut short is mended first,
        and one Optuna cannot read is refused in one line."""
        import optuna

        if self.storage == "journal":
            repair_journal(self.sweep_dir / JOURNAL)
        try:
            storage = open_storage(self.storage, self.sweep_dir)
            return optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=self.build_sampler(space, trials_so_far(self.study_name, storage)),
                pruner=build_pruner(self.pruner_config),
                directions=self.directions,
                load_if_exists=True,
            )
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            IndexError,
            AssertionError,  # Optuna's replay of an unknown op_code
            RecursionError,
        ) as error:
            where = self.sweep_dir / JOURNAL if self.storage == "journal" else self.storage
            raise SweepError(
                f"cannot open study {self.study_name} in {where}: {type(error).__name__}: "
                f"{str(error)[:200]}; move it aside to start the study anew (the job folders "
                f"keep their results)"
            ) from None

    def continue_unfinished(self, study: Any, space: dict, fixed: list[str]) -> None:
        """Trials that a killed or stopped search left running: a finished job's result is
        adopted, a job with a checkpoint is resumed in its own folder (same trial, same job
        number), the others are replaced."""
        metric = self.config.get("optimized_metric")
        resumable = settle_unfinished(study, self.sweep_dir, metric)
        for batch in consecutive(resumable, self.n_jobs):
            log.info("Resuming trial(s) %s from their checkpoints.", [t.number for t in batch])
            self.check_failures(self.launch(study, batch, space, fixed, resume=True), len(batch))

    def launch(
        self, study: Any, trials: list, space: dict, fixed: list[str], resume: bool = False
    ) -> list[str]:
        """Run consecutive trials as jobs (job N is trial N) and tell the study how each ended;
        what failed, in words. Hydra's encoding of each value reads back as the same value."""
        if resume:
            # resume=auto continues the job folder's own run, repeating the command line it
            # started with (resume=<folder> would refuse its launcher settings, parallel_jobs).
            fixed = [o for o in fixed if not o.lstrip("+").startswith("resume=")] + ["resume=auto"]
        overrides = [
            [f"{key}={trial.params[key]}" for key in space if key in trial.params]
            + [f"{key}={value}" for key, value in trial.params.items() if key not in space]
            + fixed
            for trial in trials
        ]
        returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
        told = [
            tell(study, trial, job, len(self.directions)) for trial, job in zip(trials, returns)
        ]
        return [failure for failure in told if failure is not None]

    def build_sampler(self, space: dict, trials_so_far: int) -> Any:
        """The sampler; a continued study's gets seed + its trial count, so that it does not
        propose the first run's trials again (the same command still searches the same way)."""
        config = OmegaConf.to_container(self.sampler_config, resolve=True)
        config = {key: value for key, value in config.items() if value is not None}
        target = str(config.get("_target_", ""))
        if target.endswith("MOTPESampler"):
            raise SweepError(f"hydra/sweeper/sampler=motpe: {MOTPE_REMOVED}")
        if config.get("seed") is not None:
            config["seed"] += trials_so_far
        if target.endswith("GridSampler"):
            config.setdefault("search_space", grid(space))
            points = math.prod(len(values) for values in config["search_space"].values())
            self.n_trials = min(self.n_trials, points)  # each point once
            log.info("Grid of %d points: %d trials.", points, self.n_trials)
        return build_from(config, SAMPLERS)


def trials_so_far(study_name: str | None, storage: Any) -> int:
    import optuna

    if storage is None or study_name is None:  # a new study in memory, or a new name
        return 0
    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:  # a new study
        return 0


def search_space_extender(path: str | None) -> Callable[[DictConfig, Any], None] | None:
    """custom_search_space: the function (config, trial) that a user's config names, to
    suggest more of each trial (a range that depends on another value, a new key `+w`). The
    config is the user's own, trusted as the command line is; a file dlcourse reads never
    names one."""
    if not path:
        return None
    from hydra.utils import get_method

    try:
        return get_method(path)
    except Exception as error:  # ImportError, AttributeError, Hydra's own
        raise SweepError(
            f"custom_search_space={path}: cannot import it ({error}); give the dotted path of a "
            f"function(config, trial), e.g. my_module.configure"
        ) from None
