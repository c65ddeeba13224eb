"""Optuna searches (hparams_search=mnist_optuna, dlcourse/sweeps/search.py): the search space, the
study in the sweep folder and its continuation, samplers, pruning and the report's views."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from helpers import quick_overrides, run_command
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage

from dlcourse.infrastructure.cluster import request_problem
from dlcourse.infrastructure.errors import SweepError
from dlcourse.sweeps.space import grid, search_space

SEARCH = ["dlcourse-train", "hparams_search=mnist_optuna"]
# Every trial is pruned after its first epoch: val/acc is never above 1.1.
ALWAYS_PRUNE = [
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
    "+hydra.sweeper.pruner.lower=1.1",
]


def study_of(sweep_dir) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    return optuna.load_study(study_name="mnist_mlp", storage=storage)


def test_hydra_sweeps_become_optuna_distributions():
    params = {
        "optimizer.lr": "tag(log, interval(0.001, 0.3))",
        "optimizer.momentum": "interval(0.5, 0.99)",
        "model.hidden_sizes": "choice([128], [256])",
        "trainer.epochs": "range(1, 4)",
        "dataset.batch_size": "choice(32, 64)",
    }
    space, fixed = search_space(params, ["dataset.batch_size=16", "seed=3"])
    assert space == {
        "optimizer.lr": FloatDistribution(0.001, 0.3, log=True),
        "optimizer.momentum": FloatDistribution(0.5, 0.99),
        "model.hidden_sizes": CategoricalDistribution(["[128]", "[256]"]),
        "trainer.epochs": IntDistribution(1, 4),  # its stop included, as the official sweeper
    }
    assert fixed == ["dataset.batch_size=16", "seed=3"]  # the command line fixes batch size
    assert grid({"trainer.epochs": space["trainer.epochs"]}) == {"trainer.epochs": [1, 2, 3, 4]}
    with pytest.raises(SweepError, match="sampler=grid needs choice"):
        grid(space)


def test_a_search_stores_its_study_in_the_sweep_folder_and_a_rerun_continues_it(
    tiny_mnist, tmp_path
):
    command = [*SEARCH, "hydra.sweeper.n_trials=2", *quick_overrides(tiny_mnist)]
    first = run_command(command, tmp_path, tiny_mnist)
    assert first.returncode == 0, first.stderr
    sweep_dir = tmp_path / "outputs" / "multirun" / "mnist_mlp"
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    values = [json.loads(p.read_text())["val/acc"] for p in sweep_dir.glob("*/metrics.json")]
    assert len(values) == 2 and results["best_value"] == pytest.approx(max(values))
    # The batch size is searched too, unless the command line fixes it (as quick_overrides does).
    assert set(results["best_params"]) == {
        "optimizer.lr",
        "optimizer.momentum",
        "model.hidden_sizes",
    }

    command[2] = "hydra.sweeper.n_trials=3"  # the same search, one trial larger
    again = run_command(command, tmp_path, tiny_mnist)
    assert again.returncode == 0, again.stderr
    trials = study_of(sweep_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert sorted(p.parent.name.split("_")[0] for p in sweep_dir.glob("*/metrics.json")) == [
        "0",
        "1",
        "2",
    ]
    assert trials[2].params not in (trials[0].params, trials[1].params)


def test_pruned_trials_are_recorded_as_pruned_with_their_checkpoints(tiny_mnist, tmp_path):
    command = [*SEARCH, "hydra.sweeper.n_trials=2", *ALWAYS_PRUNE, *quick_overrides(tiny_mnist)]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    sweep_dir = tmp_path / "outputs" / "multirun" / "mnist_mlp"
    assert [t.state.name for t in study_of(sweep_dir).trials] == ["PRUNED", "PRUNED"]
    for job in sorted(p for p in sweep_dir.iterdir() if p.name[0].isdigit()):
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["pruned_at_epoch"] == 1 and metrics["epochs_run"] == 1
        assert (job / "checkpoints" / "last.pt").is_file() and list(job.glob("events.out.*"))
        assert not (job / "failed.json").exists()

    reported = run_command(["dlcourse-sweep-report", str(sweep_dir)], tmp_path)
    assert reported.returncode == 0, reported.stderr
    assert "0 done, 2 pruned, 0 failed" in reported.stdout
    assert "## Pruned jobs" in reported.stdout and "after epoch 1, val/acc=" in reported.stdout
    assert f"optuna-dashboard {sweep_dir / 'optuna.journal'}" in reported.stdout
    assert (sweep_dir / "history.png").stat().st_size > 5000


def test_pruning_reaches_jobs_in_other_processes(tiny_mnist, tmp_path):
    command = [
        *SEARCH,
        "launcher=parallel",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        *ALWAYS_PRUNE,
        *quick_overrides(tiny_mnist),
    ]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    study = study_of(tmp_path / "outputs" / "multirun" / "mnist_mlp")
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    assert all(
        t.intermediate_values == {1: pytest.approx(t.intermediate_values[1])} for t in study.trials
    )


def test_a_grid_search_runs_each_point_once(tiny_mnist, tmp_path):
    command = [
        *SEARCH,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=10",
        # The command line's sweeps replace the preset's intervals, which a grid cannot take.
        "optimizer.lr=choice(0.01,0.1)",
        "optimizer.momentum=choice(0.9)",
        "model.hidden_sizes=choice([16],[32])",
        *quick_overrides(tiny_mnist),
        "trainer.epochs=1",
    ]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    trials = study_of(tmp_path / "outputs" / "multirun" / "mnist_mlp").trials
    points = {(t.params["optimizer.lr"], t.params["model.hidden_sizes"]) for t in trials}
    assert len(trials) == 4 and points == {(lr, h) for lr in (0.01, 0.1) for h in ("[16]", "[32]")}


def test_cma_es_searches_the_same_space(tiny_mnist, tmp_path):
    """CMA-ES (its own package); the random sampler runs in README's commands."""
    command = [
        *SEARCH,
        "hydra/sweeper/sampler=cmaes",
        "hydra.sweeper.n_trials=2",
        *quick_overrides(tiny_mnist),
        "trainer.epochs=1",
    ]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    trials = study_of(tmp_path / "outputs" / "multirun" / "mnist_mlp").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert 0.001 <= trials[1].params["optimizer.lr"] <= 0.3


def test_two_objectives_give_a_pareto_front_in_the_results_and_the_report(tiny_mnist, tmp_path):
    """direction as a list (the official sweeper's multi-objective search): each job returns one
    value per optimized_metric, and the results hold the trials none beats on both."""
    command = [
        *SEARCH,
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.direction=[maximize,minimize]",
        "optimized_metric=[val/acc,val/loss]",
        "hydra.sweeper.n_trials=3",
        *quick_overrides(tiny_mnist),
        "trainer.epochs=1",
    ]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr
    sweep_dir = tmp_path / "outputs" / "multirun" / "mnist_mlp"
    trials = study_of(sweep_dir).trials
    assert [len(t.values) for t in trials] == [2, 2, 2]
    front = OmegaConf.load(sweep_dir / "optimization_results.yaml").solutions
    dominated = [
        a for a in trials if any(b.values[0] >= a.values[0] and b.values[1] <= a.values[1]
                                 and b.values != a.values for b in trials)
    ]  # fmt: skip
    assert len(front) == len(trials) - len(dominated) >= 1
    report = run_command(["dlcourse-sweep-report", str(sweep_dir)], tmp_path, tiny_mnist)
    assert report.returncode == 0, report.stderr
    assert (sweep_dir / "pareto_front.png").is_file() and not (sweep_dir / "history.png").exists()


def test_a_grid_over_an_interval_is_refused_in_one_line(tiny_mnist, tmp_path):
    command = [*SEARCH, "hydra/sweeper/sampler=grid", *quick_overrides(tiny_mnist)]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: hydra/sweeper/sampler=grid needs choice(...) or range(...)" in result.stderr


def test_optuna_with_a_wrong_metric_name_stops_with_the_available_names(tiny_mnist, tmp_path):
    command = [*SEARCH, "optimized_metric=val/accuracy", *quick_overrides(tiny_mnist)]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "optimized_metric='val/accuracy' is not a metric of this run; choose one of: train/loss"
        in result.stderr
    )
    assert "val/acc" in result.stderr


def test_a_slurm_request_is_checked_against_the_nodes():
    nodes = [{"name": "n1", "cpus": 2, "memory_mb": 24000, "gpus": 0}]
    preset = OmegaConf.create(
        {
            "partition": "debug",
            "tasks_per_node": 1,
            "cpus_per_task": 8,
            "mem_gb": 32,
            "gpus_per_node": 1,
        }
    )
    problem = request_problem(preset, nodes)
    assert "hydra.launcher.cpus_per_task asks 8 CPUs per node (the largest node has 2)" in problem
    assert "hydra.launcher.mem_gb asks 32768 MB" in problem and "gpus_per_node asks 1" in problem
    fitted = OmegaConf.merge(preset, {"cpus_per_task": 1, "mem_gb": 2, "gpus_per_node": None})
    assert request_problem(fitted, nodes) is None
    two_tasks = OmegaConf.merge(fitted, {"tasks_per_node": 3})
    assert "asks 3 CPUs per node" in request_problem(two_tasks, nodes)
