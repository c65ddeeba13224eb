"""The learning-rate finder (dlcourse-lr-find): fastai's valley rule against a hand-worked
curve, and the command on tiny data: its picture, its numbers, and a printed dlcourse-train
command that runs as printed."""

from __future__ import annotations

import json
import shlex

import pytest
from helpers import call, compose_config, quick_overrides
from omegaconf import OmegaConf

from dlcourse.lr_finder import exponential_rates, steep, valley


def test_valley_suggests_halfway_down_the_longest_fall():
    """Flat for 20 steps, falling from step 20 to 69, rising after: the longest falling run
    (one flat point, then 50 falling ones) spans steps 19-69 of the 85 kept (the first 10 and
    the last 5 of 100 are left out); halfway in, by fastai's formula: start 19 − 1 = 18 (8 in
    the kept ones), + ⌊51 / 3⌋ + ⌊51 / 6⌋ = 8 + 17 + 8 = 33 kept, step 43."""
    rates = exponential_rates(1e-7, 10.0, 100)
    losses = [5.0] * 20 + [4.0 - 0.05 * i for i in range(50)] + [2 + 0.2 * i for i in range(30)]
    assert valley(rates, losses) == rates[43]
    assert valley(rates, [5.0] * 100) is None  # flat: the loss never fell
    # steep: the fastest fall against log(rate) is the drop from 5.0 to 4.0, steps 19 → 20.
    assert steep(rates, losses) == rates[19]
    assert steep(rates, [5.0] * 100) is None
    assert rates[0] == 1e-7 and rates[-1] == pytest.approx(10.0) and len(rates) == 100


def test_the_command_writes_its_curve_and_a_train_command_that_runs(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    settings = ["model=mlp", "model.hidden_sizes=[32]", *quick_overrides(tiny_mnist)]
    status, text = call("dlcourse-lr-find", [*settings, "lr_find.steps=40"], monkeypatch, capsys)
    assert status == 0, text[-1500:]
    [folder] = (tmp_path / "outputs" / "lr_find").iterdir()
    result = json.loads((folder / "lr_find.json").read_text())
    assert (folder / "lr_find.png").is_file() and (folder / ".hydra" / "config.yaml").is_file()
    rates = result["learning_rates"]
    assert 10 <= len(rates) <= 40 and len(result["losses"]) == len(rates)
    assert rates[0] <= result["suggestion"] <= rates[-1]
    assert result["suggestion"] == result["suggestions"]["steep"]  # the default rule
    [printed] = [
        line.strip() for line in text.splitlines() if line.strip().startswith("dlcourse-train")
    ]
    assert printed == result["train_with"]
    words = shlex.split(printed)
    assert f"optimizer.lr={result['suggestion']:.3g}" in words
    assert not any(word.startswith("lr_find.") for word in words)
    status, text = call("dlcourse-train", words[1:], monkeypatch, capsys)  # as printed
    assert status == 0, text[-1500:]
    monkeypatch.setenv("COLUMNS", "100")  # its table fits the terminal: the README's width
    status, text = call("dlcourse-runs", ["outputs"], monkeypatch, capsys)
    [row] = [line for line in text.splitlines() if " lr-find " in line]
    assert f"lr={result['suggestion']:.3g}  model=" in row, text


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("lr_find.start_lr=0", "lr_find needs 0 < start_lr < end_lr"),
        ("lr_find.steps=3", "steps ≥ 10"),
        ("model=template_ncc", "TemplateNCC learns without gradients"),
        ("lr_find.rule=magic", "lr_find.rule=magic is not a rule; use one of: valley, steep"),
    ],
)
def test_bad_settings_are_one_line(setting, message, tiny_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, text = call(
        "dlcourse-lr-find", [setting, *quick_overrides(tiny_mnist)], monkeypatch, capsys
    )
    assert status == 2 and message in text and "Traceback" not in text, text[-1500:]


@pytest.mark.parametrize("experiment", ["fast_mlp_mnist", "mlp_fashion_mnist", "conv_inpainting"])
def test_the_finder_composes_exactly_what_dlcourse_train_would(experiment):
    """configs/lr_find.yaml is train.yaml plus `lr_find`: the same settings mean the same run."""
    found = OmegaConf.to_container(compose_config([f"experiment={experiment}"], "lr_find"))
    trained = OmegaConf.to_container(compose_config([f"experiment={experiment}"]))
    assert found.pop("lr_find")["steps"] == 100
    assert found == trained
