"""dlcourse's Optuna sweeper (Optuna 4/5), which Hydra finds here in the `hydra_plugins`
namespace: its settings and options, and the search itself.

    dlcourse-train hparams_search=mnist_optuna                            # TPE
    dlcourse-train hparams_search=mnist_optuna hydra/sweeper/pruner=median  # with pruning
    dlcourse-train hparams_search=mnist_optuna hydra/sweeper/sampler=random launcher=parallel

The sweeper asks Optuna for trials, turns each into a job's overrides (`hydra.sweeper.params`
uses Hydra's sweep syntax: `choice(...)`, `interval(...)`, `tag(log, interval(...))`,
`range(...)`) and tells Optuna each job's outcome. The study lives in the sweep folder
(`optuna.journal`), so the same command run again continues it; job N is trial N. What a job
does with its trial (report, prune) is in dlcourse/sweeps/search.py; the study across runs (its
lock, trials a killed search left running) in dlcourse/sweeps/study.py. Hydra imports every
plugin at each start-up, so Optuna is imported only once a search runs.
"""

# No `from __future__ import annotations`: Hydra loads plugins without registering them in
# sys.modules, where dataclasses look string annotations up; OmegaConf needs real types too.
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig, OmegaConf

from dlcourse.infrastructure.errors import SweepError
from dlcourse.infrastructure.run_folder import JOURNAL
from dlcourse.sweeps.search import SAMPLERS, build_from, build_pruner, open_storage, repair_journal
from dlcourse.sweeps.study import (
    consecutive,
    count_finished,
    settle_unfinished,
    study_lock,
    tell,
    write_results,
)

log = logging.getLogger(__name__)

SAMPLER_OPTIONS = {
    # 5 random trials before TPE models the rest (Optuna's default, 10, is half of a 20-trial
    # search).
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 5},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None, "n_startup_trials": 1},
    # Its search space comes from hydra.sweeper.params (choices and ranges only).
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": None},
}
PRUNER_OPTIONS = {
    "none": {"_target_": None},
    # Stops a trial whose metric is worse than the median of earlier trials at the same epoch.
    "median": {
        "_target_": "optuna.pruners.MedianPruner",
        "n_startup_trials": 5,
        "n_warmup_steps": 0,
    },
    "successive_halving": {
        "_target_": "optuna.pruners.SuccessiveHalvingPruner",
        "min_resource": 1,
        "reduction_factor": 3,
    },
    "hyperband": {
        "_target_": "optuna.pruners.HyperbandPruner",
        "min_resource": 1,
        "max_resource": "auto",
        "reduction_factor": 3,
    },
}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.dlcourse_optuna_sweeper.DlcourseOptunaSweeper"
    # The sampler and pruner stay configs: the sweeper builds them (a grid needs its points).
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING  # from the defaults above (MISSING: merged without replacing them)
    pruner: Any = MISSING
    direction: str = "maximize"  # or minimize
    storage: str | None = "journal"  # optuna.journal in the sweep folder; sqlite; or a URL
    study_name: str = "search"
    n_trials: int = 20  # the study's size: a rerun runs the trials still missing
    n_jobs: int = 1  # trials launched at once (launcher=parallel, SLURM)
    max_failure_rate: float = 1.0  # stop the search when more of its trials fail than this
    params: dict[str, str] = field(default_factory=dict)  # key: Hydra sweep, e.g. choice(1, 2)


store = ConfigStore.instance()
store.store(
    group="hydra/sweeper", name="dlcourse_optuna", node=OptunaSweeperConf, provider="dlcourse"
)
for name, node in SAMPLER_OPTIONS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="dlcourse")
for name, node in PRUNER_OPTIONS.items():
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="dlcourse")


def search_space(params: dict[str, str], arguments: list[str]) -> tuple[dict, list[str]]:
    """Optuna distributions for the swept keys; the other overrides, passed to every job."""
    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    space, fixed = {}, {}
    for override in parser.parse_overrides(lines):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed[override.get_key_element()] = override.input_line or override.get_key_element()
    # The command line fixes a searched key (e.g. dataset.batch_size=32): then it is not searched.
    space = {key: value for key, value in space.items() if key not in fixed}
    return space, list(fixed.values())


def distribution(override: Override) -> Any:
    """An Optuna distribution from one Hydra sweep: choice → categorical, range → int or float
    steps, interval → uniform (log-uniform when tagged `log`)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if override.is_range_sweep():
        numbers = (value.start, value.stop, value.step)
        if any(isinstance(n, float) for n in numbers):
            # Hydra's range excludes its stop, as Python's does.
            last = value.stop - value.step
            return FloatDistribution(float(value.start), float(last), step=float(value.step))
        return IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise SweepError(f"{override.input_line}: Optuna cannot search this kind of sweep")


def grid(space: dict) -> dict[str, list]:
    """GridSampler's search space: every searched key must be a choice or a range."""
    from optuna.distributions import CategoricalDistribution

    points = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            points[key] = list(dist.choices)
        elif getattr(dist, "step", None):
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            points[key] = [dist.low + i * dist.step for i in range(count)]
        else:
            raise SweepError(
                f"hydra/sweeper/sampler=grid needs choice(...) or range(...) for {key}, not an "
                "interval; use another sampler, or give the values"
            )
    return points


class DlcourseOptunaSweeper(Sweeper):
    """Ask → launch a batch of `n_jobs` jobs → tell, until the study holds `n_trials` trials."""

    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: str,
        storage: str | None,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: dict[str, str] | None,
    ) -> None:
        self.sampler_config, self.pruner_config = sampler, pruner
        self.direction, self.storage, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = dict(params or {})

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
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with study_lock(self.sweep_dir):  # one search at a time continues a study
            study = self.open_study(space)
            failures = self.continue_unfinished(study, space, fixed)
            to_go = self.n_trials - count_finished(study)
            log.info("Study %s in %s: %d trials to go.", self.study_name, self.sweep_dir, to_go)
            while to_go > 0:
                trials = [study.ask(space) for _ in range(min(self.n_jobs, to_go))]
                numbers = [trial.number for trial in trials]
                if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
                    raise SweepError(
                        f"study {self.study_name} got trials {numbers} from another sweep at the "
                        "same time; run one sweep per study (or give each its own hydra.sweep.dir)"
                    )
                failures += self.launch(study, trials, space, fixed)
                to_go -= len(trials)
                if failures > self.max_failure_rate * count_finished(study):
                    raise SweepError(
                        f"{failures} trials failed, more than max_failure_rate="
                        f"{self.max_failure_rate} allows; see the failed.json of the jobs in "
                        f"{self.sweep_dir}"
                    )
            write_results(study, self.sweep_dir)

    def open_study(self, space: dict) -> Any:
        """The study, created or continued; a journal that a kill cut short is mended first,
        and one Optuna cannot read is refused in one line."""
        import optuna

        if (self.storage or "journal") == "journal":
            repair_journal(self.sweep_dir / JOURNAL)
        try:
            storage = open_storage(self.storage, self.sweep_dir)
            return optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=self.build_sampler(space, trials_so_far(self.study_name, storage)),
                pruner=build_pruner(self.pruner_config),
                direction=self.direction,
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
            where = (
                self.sweep_dir / JOURNAL
                if (self.storage or "journal") == "journal"
                else self.storage
            )
            raise SweepError(
                f"cannot open study {self.study_name} in {where}: {type(error).__name__}: "
                f"{str(error)[:200]}; move it aside to start the study anew (the job folders "
                f"keep their results)"
            ) from None

    def continue_unfinished(self, study: Any, space: dict, fixed: list[str]) -> int:
        """Trials that a killed or stopped search left running: a finished job's result is
        adopted, a job with a checkpoint is resumed in its own folder (same trial, same job
        number), the others are replaced. Returns how many of the resumed ones failed."""
        metric = self.config.get("optimized_metric")
        resumable = settle_unfinished(study, self.sweep_dir, metric)
        failures = 0
        for batch in consecutive(resumable, self.n_jobs):
            log.info("Resuming trial(s) %s from their checkpoints.", [t.number for t in batch])
            failures += self.launch(study, batch, space, fixed, resume=True)
        return failures

    def launch(
        self, study: Any, trials: list, space: dict, fixed: list[str], resume: bool = False
    ) -> int:
        """Run consecutive trials as jobs (job N is trial N) and tell the study how each ended;
        how many failed. Hydra's encoding of each value reads back as the same value."""
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
        return sum(tell(study, trial, job) for trial, job in zip(trials, returns))

    def build_sampler(self, space: dict, trials_so_far: int) -> Any:
        """The sampler; a continued study's gets seed + its trial count, so that it does not
        propose the first run's trials again (the same command still searches the same way)."""
        config = OmegaConf.to_container(self.sampler_config, resolve=True)
        if config.get("seed") is not None:
            config["seed"] += trials_so_far
        if str(config.get("_target_", "")).endswith("GridSampler"):
            config.setdefault("search_space", grid(space))
            points = math.prod(len(values) for values in config["search_space"].values())
            self.n_trials = min(self.n_trials, points)  # each point once
        return build_from(config, SAMPLERS)


def trials_so_far(study_name: str, storage: Any) -> int:
    import optuna

    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:  # a new study
        return 0
