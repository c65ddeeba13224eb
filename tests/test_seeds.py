"""Seeds as an axis (issue #26 point 2, dlcourse/sweeps/seeds.py): seeds=N runs one
configuration once per seed, each a whole run; the group reports mean, spread and 95 % interval
(sweep report, Optuna); a stopped group resumes; dlcourse-compare gives a paired verdict."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
from helpers import TINY_EPOCHS, call, quick_overrides, run_command

from dlcourse.commands.compare import compare
from dlcourse.infrastructure.checkpoint import load_checkpoint
from dlcourse.trainer import Trainer

# Student's t, two-sided 95 %: the 0.975 quantile for 2 and 4 degrees of freedom (any t-table).
T_975 = {2: 4.302652729911275, 4: 2.7764451051977987}


def group_command(tiny_mnist, folder, *more):
    return ["model=linear", *quick_overrides(tiny_mnist), f"hydra.run.dir={folder}", *more]


def read(path):
    return json.loads(path.read_text())


def test_seeds_run_each_seed_as_a_run_and_the_group_reports_mean_and_interval(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    group = tmp_path / "group"
    status, text = call(
        "dlcourse-train", group_command(tiny_mnist, group, "seeds=3"), monkeypatch, capsys
    )
    assert status == 0, text[-800:]
    members = [read(group / f"seed={seed}" / "metrics.json") for seed in (42, 43, 44)]
    metrics = read(group / "metrics.json")
    values = [m["test/loss"] for m in members]  # (the tiny data's test/acc is 1.0 for each)
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    spread = metrics["seeds"]["spread"]["test/loss"]
    assert metrics["test/loss"] == pytest.approx(mean) and spread["values"] == values
    assert spread["std"] == pytest.approx(std)
    assert spread["high"] - mean == pytest.approx(T_975[2] * std / math.sqrt(3))
    assert mean - spread["low"] == pytest.approx(T_975[2] * std / math.sqrt(3))
    assert len(set(values)) > 1  # the seeds did differ
    # A seed's run is the run that seed=43 gives on its own, and eval takes it as one.
    alone = tmp_path / "alone"
    status, text = call(
        "dlcourse-train", group_command(tiny_mnist, alone, "seed=43"), monkeypatch, capsys
    )
    assert status == 0, text[-800:]
    assert read(alone / "metrics.json")["test/loss"] == members[1]["test/loss"]
    output = tmp_path / "eval.json"
    argv = [f"ckpt_path={group / 'seed=43'}", f"data_dir={tiny_mnist}", f"output_path={output}"]
    status, text = call("dlcourse-eval", argv, monkeypatch, capsys)
    assert status == 0 and read(output)["test/loss"] == pytest.approx(members[1]["test/loss"])
    status, text = call("dlcourse-eval", [f"ckpt_path={group}"], monkeypatch, capsys)
    assert status != 0 and f"e.g. {group / 'seed=42'}" in text and "Traceback" not in text
    # The group in TensorBoard: a run of its own, each epoch's mean of its seeds' runs (the
    # margin chart's middle line) and the layout that draws it with its interval.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(group))
    events.Reload()
    histories = [
        load_checkpoint(group / f"seed={seed}" / "checkpoints" / "last.pt")["history"]
        for seed in (42, 43, 44)
    ]
    curve = [event.value for event in events.Scalars("seeds/val/loss")]
    expected = [sum(h[i]["val/loss"] for h in histories) / 3 for i in range(len(histories[0]))]
    assert curve == pytest.approx(expected) and len(curve) == TINY_EPOCHS
    assert "seeds/val/loss_low" in events.Tags()["scalars"]


def test_a_stopped_group_resumes_its_unfinished_seeds(tiny_mnist, tmp_path, monkeypatch, capsys):
    group = tmp_path / "group"
    original = Trainer.train_step

    def train_step(self, batch):  # a real SIGINT in the second seed's run (seed 8), at step 3
        result = original(self, batch)
        if self.config["seed"] == 8 and self.position.step + 1 == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    argv = group_command(tiny_mnist, group, "seeds=3", "seed=7")
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", train_step)
        status, text = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status == 130 and "resume=" in text, text[-800:]
    assert (group / "seed=7" / "metrics.json").is_file()
    assert not (group / "seed=8" / "metrics.json").exists()
    assert not (group / "seed=9").exists() and not (group / "metrics.json").exists()
    first = read(group / "seed=7" / "metrics.json")
    status, text = call("dlcourse-train", [f"resume={group}"], monkeypatch, capsys)
    assert status == 0, text[-800:]
    assert read(group / "seed=7" / "metrics.json") == first  # finished: not run again
    assert read(group / "metrics.json")["seeds"]["seeds"] == [7, 8, 9]
    assert (group / ".hydra" / "resume-1" / "config.yaml").is_file()


@pytest.mark.parametrize("seeds", ["0", "[1,1]", "[-1]", "abc", "1001"])
def test_bad_seeds_are_refused_in_one_line_before_any_folder(
    seeds, tiny_mnist, tmp_path, monkeypatch, capsys
):
    group = tmp_path / "group"
    argv = group_command(tiny_mnist, group, f"seeds={seeds}")
    status, text = call("dlcourse-train", argv, monkeypatch, capsys)
    assert status != 0 and "seeds=" in text and "Traceback" not in text, text[-600:]
    assert not (group / "seeds.json").exists() and not (group / ".hydra").exists()


def fake_group(folder, values, seeds=(42, 43, 44), model="linear"):
    """A seed group's folder as dlcourse writes it, with chosen test/acc values."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"model:\n  name: {model}\nseed: 42\n")
    mean = sum(values) / len(values)
    spread = {"test/acc": {"mean": mean, "values": list(values), "n": len(values)}}
    metrics = {"test/acc": mean, "monitor": "val/acc", "higher_is_better": {"acc": True}}
    metrics["seeds"] = {"seeds": list(seeds), "spread": spread}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_compare_gives_a_paired_verdict_that_matches_the_t_distribution_by_hand(tmp_path):
    a = fake_group(tmp_path / "a", [0.90, 0.91, 0.92])
    b = fake_group(tmp_path / "b", [0.80, 0.82, 0.81], model="mlp")
    text = compare(a, b)
    # Differences 0.10, 0.09, 0.11: mean 0.10, sd 0.01, t = 0.10 / (0.01 / √3) = 17.32. For 2
    # degrees of freedom the two-sided p is 1 - t / √(2 + t²) = 0.00331; the interval's half
    # width is 4.303 · 0.01 / √3 = 0.0248 (2.48 points).
    t = 0.10 / (0.01 / math.sqrt(3))
    p = 1 - t / math.sqrt(2 + t**2)
    assert f"A is better by 10.00 ± 2.48 points, p = {p:.3g}" in text, text
    assert "model.name: linear | mlp" in text
    close = fake_group(tmp_path / "c", [0.905, 0.915, 0.91])
    assert "not distinguishable with 3 seeds" in compare(a, close)
    assert "B is better" in compare(b, a)


def test_compare_of_single_runs_says_no_test_is_possible(tmp_path, monkeypatch, capsys):
    a = fake_group(tmp_path / "a", [0.9], seeds=(1,))
    b = fake_group(tmp_path / "b", [0.8], seeds=(1,))
    assert "one value per side, no test; run both with seeds=5" in compare(a, b)
    status, text = call("dlcourse-compare", [str(a), str(tmp_path)], monkeypatch, capsys)
    assert status == 2 and "has no metrics.json" in text and "Traceback" not in text


def test_a_sweep_with_seeds_is_ranked_by_the_mean_with_its_interval(tiny_mnist, tmp_path):
    command = ["dlcourse-train", "-m", "model=linear,mlp", "seeds=2", *quick_overrides(tiny_mnist)]
    command.append(f"hydra.sweep.dir={tmp_path / 'sweep'}")
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr[-800:]
    report = run_command(["dlcourse-sweep-report", str(tmp_path / "sweep")], tmp_path)
    assert report.returncode == 0, report.stderr
    rows = [line for line in report.stdout.splitlines() if "_model=" in line]
    means = [read(tmp_path / "sweep" / name / "metrics.json")["val/acc"] for name in
             ("0_model=linear", "1_model=mlp")]  # fmt: skip
    assert len(rows) == 2 and all("(2 seeds)" in row and " ± " in row for row in rows)
    assert rows[0].startswith("| ★") and f"{max(means):.4f} ± " in rows[0]


def test_an_optuna_search_optimises_each_configurations_mean_over_its_seeds(tiny_mnist, tmp_path):
    import yaml

    command = ["dlcourse-train", "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2"]
    command += ["seeds=2", *quick_overrides(tiny_mnist)]
    result = run_command(command, tmp_path, tiny_mnist)
    assert result.returncode == 0, result.stderr[-800:]
    sweep = tmp_path / "outputs" / "multirun" / "mnist_mlp"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    means = [read(p)["val/acc"] for p in sweep.glob("*/metrics.json")]
    assert len(means) == 2 and results["best_value"] == pytest.approx(max(means))
    for job in sweep.glob("[0-9]*"):
        members = [read(job / f"seed={s}" / "metrics.json")["val/acc"] for s in (42, 43)]
        assert read(job / "metrics.json")["val/acc"] == pytest.approx(sum(members) / 2)
