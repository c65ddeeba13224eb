"""Every folder and file dlcourse prints, every command takes back as printed (issue #26): run
folders, sweep jobs (3_model=mlp_optimizer.lr=0.1), Optuna trials (their drawn floats), jobs of
a list setting ([64,32]), their checkpoints; through dlcourse-eval, dlcourse-predict, resume=
and dlcourse-runs. And dlcourse-runs tells a stopped run from a failed one, in 100 columns."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest
import torch
from helpers import call, compose_config, quick_overrides, tiny_digits
from PIL import Image

from dlcourse.run import train

# Folder names as dlcourse-train writes them (infrastructure/config: run_name, job_name): a plain
# run, one with a setting, a sweep job, an Optuna trial, a job of a list-valued setting, a job of
# an added (+) setting, a seed's run in a group.
NAMES = [
    "2026-12-03_11-59-23_linear_a1b2c3",
    "2026-12-07_22-07-00_mlp_model.hidden_sizes=[64]_259db7",  # with its command line's settings
    "3_model=mlp_optimizer.lr=0.1",
    "7_optimizer.lr=0.002981_optimizer.momentum=0.8512",
    "0_model.hidden_sizes=[64,32]",
    "1_+trainer.grad_clip=1.0",
    "2_seeds=3/seed=43",  # a seed group's run of one seed (dlcourse/sweeps/seeds.py)
]


@pytest.fixture(scope="module")
def printed(tiny_mnist, tmp_path_factory):
    """One tiny run, copied to each kind of folder name under outputs/multirun/<sweep>/."""
    root = tmp_path_factory.mktemp("printed")
    first = root / "first"
    train(compose_config(["model=linear", *quick_overrides(tiny_mnist)]), first)
    sweep = root / "outputs" / "multirun" / "2026-12-03_12-00-00_abc123"
    for name in NAMES:
        shutil.copytree(first, sweep / name)
    images, _ = tiny_digits(10, seed=3)
    Image.fromarray(images[3].byte().numpy(), mode="L").save(root / "digit.png")
    return root, sweep


@pytest.mark.parametrize("name", NAMES)
def test_eval_and_predict_take_every_folder_and_checkpoint_as_printed(
    name, printed, tiny_mnist, monkeypatch, capsys
):
    root, sweep = printed
    folder = sweep / name
    for path in (folder, folder / "checkpoints" / "best.pt"):
        output = root / f"eval-{NAMES.index(name)}.json"
        argv = [f"ckpt_path={path}", f"data_dir={tiny_mnist}", f"output_path={output}"]
        status, text = call("dlcourse-eval", argv, monkeypatch, capsys)
        assert status == 0, text[-600:]
        assert "test/acc" in json.loads(output.read_text())
        output.unlink()
        status, text = call(
            "dlcourse-predict", [str(path), str(root / "digit.png")], monkeypatch, capsys
        )
        assert status == 0 and "digit.png" in text, text[-600:]


@pytest.mark.parametrize("name", NAMES)
def test_resume_takes_every_folder_as_printed_and_as_its_hint_says(
    name, printed, tiny_mnist, monkeypatch, capsys
):
    """resume=<folder> as dlcourse-runs shows it, and the resume hint's own command line."""
    root, sweep = printed
    folder = root / "resumed" / name
    shutil.copytree(sweep / name, folder)
    (folder / "metrics.json").unlink()  # stopped, as far as dlcourse-runs can tell
    monkeypatch.chdir(root)
    status, text = call("dlcourse-runs", [str(folder.parent)], monkeypatch, capsys)
    [row] = [line for line in text.splitlines() if "resume with: " in line]
    hint = shlex.split(row.split("resume with: ", 1)[1])
    assert hint[0] == "dlcourse-train" and len(hint) == 2, row
    status, text = call("dlcourse-train", [*hint[1:], "trainer.epochs=3"], monkeypatch, capsys)
    assert status == 0, text[-800:]
    assert torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 4
    status, text = call(
        "dlcourse-train", [f"resume={folder}", "trainer.epochs=4"], monkeypatch, capsys
    )
    assert status == 0, text[-800:]
    assert json.loads((folder / "metrics.json").read_text())["epochs_run"] == 4


def test_runs_lists_every_folder_in_100_columns_and_eval_takes_each_back(
    printed, monkeypatch, capsys
):
    """Folders are shown as paths from here (a path is never cut, so run from where they are)."""
    root, sweep = printed
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.chdir(root)
    status, text = call("dlcourse-runs", ["outputs"], monkeypatch, capsys)
    assert status == 0
    assert max(len(line) for line in text.splitlines()) <= 100, text
    for name in NAMES:
        [shown] = [line for line in text.splitlines() if line.endswith(name)]
        assert shown == f"outputs/multirun/{sweep.name}/{name}", text
        status, output = call("dlcourse-eval", [f"ckpt_path={shown}"], monkeypatch, capsys)
        assert status == 0 and "test/acc" in output, output[-600:]
