"""The Optuna sweeper's options (hydra/sweeper/sampler=..., hydra/sweeper/pruner=...), which the
plugin (src/hydra_plugins/dlcourse_optuna_sweeper.py) stores in Hydra's config store.

Each sampler lists the fields of Hydra's official optuna sweeper and Optuna's own, so that a
config written for the official sweeper sets them as it is, without a `+`
(`hydra.sweeper.sampler.n_ei_candidates=12`). A field left null is not passed on: Optuna's own
default applies. No Optuna import here: Hydra loads every plugin at each start-up.
"""

from __future__ import annotations

SAMPLER_OPTIONS: dict[str, dict] = {
    "tpe": {
        "_target_": "optuna.samplers.TPESampler",
        **dict.fromkeys(
            ("seed", "consider_prior", "prior_weight", "consider_magic_clip", "consider_endpoints")
        ),
        **dict.fromkeys(("n_startup_trials", "n_ei_candidates", "gamma", "weights")),
        **dict.fromkeys(("multivariate", "group", "warn_independent_sampling", "constant_liar")),
    },
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "cmaes": {
        "_target_": "optuna.samplers.CmaEsSampler",
        **dict.fromkeys(("seed", "x0", "sigma0", "n_startup_trials", "independent_sampler")),
        **dict.fromkeys(("warn_independent_sampling", "consider_pruned_trials", "popsize")),
        **dict.fromkeys(("restart_strategy", "inc_popsize", "use_separable_cma")),
        **dict.fromkeys(("with_margin", "lr_adapt", "source_trials")),
    },
    "nsgaii": {
        "_target_": "optuna.samplers.NSGAIISampler",
        **dict.fromkeys(("seed", "population_size", "mutation_prob", "crossover_prob")),
        **dict.fromkeys(("swapping_prob", "constraints_func")),
    },
    "qmc": {
        "_target_": "optuna.samplers.QMCSampler",
        **dict.fromkeys(("seed", "qmc_type", "scramble", "independent_sampler")),
        **dict.fromkeys(("warn_asynchronous_seeding", "warn_independent_sampling")),
    },
    "gp": {
        "_target_": "optuna.samplers.GPSampler",
        **dict.fromkeys(("seed", "independent_sampler", "n_startup_trials")),
        **dict.fromkeys(("deterministic_objective", "constraints_func")),
        "warn_independent_sampling": None,
    },
    # Its search space comes from hydra.sweeper.params (choices and ranges only).
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": None},
    # Removed from Optuna 4: kept so that a config naming it gets the official sweeper's message.
    "motpe": {"_target_": "optuna.samplers.MOTPESampler"},
}
MOTPE_REMOVED = (
    "The 'motpe' sampler was removed in Optuna 4.0. Use 'hydra/sweeper/sampler=tpe' instead. "
    "TPESampler now handles multi-objective optimization."
)  # the official sweeper's words

PRUNER_OPTIONS: dict[str, dict] = {
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
