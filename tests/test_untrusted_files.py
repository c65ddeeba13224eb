"""A checkpoint is data, never code: configs read from files are checked before anything is built.

Every variant of a crafted checkpoint below is fed to the three ways a checkpoint is used
(dlcourse-predict, dlcourse-eval, resume=): each must be refused with one line, nothing in it
may run (its marker file never appears), and the victim file stays as it was.
"""

from __future__ import annotations

import base64
import copy
import math
import pickle
import random
from pathlib import Path

import pytest
import torch
from helpers import DELETE, compose_config, quick_overrides, replaced, run_command

from dlcourse.commands.evaluate import evaluate_checkpoint
from dlcourse.commands.predict import main as predict
from dlcourse.infrastructure.checkpoint import load_checkpoint
from dlcourse.infrastructure.errors import UserError
from dlcourse.resume import resume_config
from dlcourse.run import train


@pytest.fixture(scope="module")
def good_run(tiny_mnist, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("good_run")
    train(
        compose_config(["model=mlp", "model.hidden_sizes=[16]", *quick_overrides(tiny_mnist)]),
        run_dir,
    )
    return run_dir


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


def payload_pickle(marker: Path) -> str:
    """A pickle that creates `marker` when loaded with weights_only=False, base64-encoded."""

    class Touch:
        def __reduce__(self):
            return (Path.touch, (marker,))

    return base64.b64encode(pickle.dumps(Touch())).decode()


def attacks(marker: Path, victim: Path) -> dict[str, tuple[str, object]]:
    """(config key to replace, value) for each attack: code named at every depth Hydra reads."""
    stealth = {
        "_target_": "builtins.max",
        "_args_": [
            {
                "_target_": "torch.load",
                "weights_only": False,
                "f": {
                    "_target_": "io.BytesIO",
                    "_args_": [
                        {"_target_": "base64.b64decode", "_args_": [payload_pickle(marker)]}
                    ],
                },
            }
        ],
    }
    return {
        "stealth pickle in a number": ("model.num_classes", stealth),
        "truncate a file": ("model._target_", "builtins.open"),
        "open(victim, 'w') nested": (
            "model.num_classes",
            {"_target_": "builtins.open", "_args_": [str(victim), "w"]},
        ),
        "copy a file": (
            "dataset.data_dir",
            {"_target_": "shutil.copyfile", "src": str(victim), "dst": str(marker)},
        ),
        "write a file": (
            "loss.label_smoothing",
            {"_target_": "pathlib.Path.write_text", "_args_": [str(victim), "x"]},
        ),
        "plant a symlink": (
            "optimizer.lr",
            {"_target_": "os.symlink", "_args_": [str(victim), str(marker)]},
        ),
        "partial": (
            "scheduler",
            {"_target_": "os.system", "_partial_": True, "_args_": [f"touch {marker}"]},
        ),
        "args on a shipped target": (
            "model._args_",
            [{"_target_": "os.system", "_args_": [f"touch {marker}"]}],
        ),
        "target in a list": (
            "model.hidden_sizes",
            [16, {"_target_": "os.system", "_args_": [f"touch {marker}"]}],
        ),
        "another component's target": ("loss._target_", "dlcourse.models.MLP"),
        "interpolation": ("dataset.data_dir", "${oc.env:HOME}"),
        "recursive flag": ("model._recursive_", True),
    }


def with_config_value(checkpoint: dict, key: str, value: object) -> dict:
    crafted = copy.deepcopy(checkpoint)
    node = crafted["config"]
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return crafted


def uses(
    checkpoint_path: Path, tiny_mnist: Path, image: Path, tmp_path: Path
) -> dict[str, callable]:
    """The three ways a checkpoint is used, each as a function of no arguments."""
    resume_cfg = compose_config(quick_overrides(tiny_mnist))
    resume_cfg.resume = str(checkpoint_path)
    return {
        "predict": lambda: predict([str(checkpoint_path), str(image)]),
        "eval": lambda: evaluate_checkpoint(
            checkpoint_path, tmp_path / "out.json", str(tiny_mnist), "cpu"
        ),
        "resume": lambda: resume_config(resume_cfg, [f"resume={checkpoint_path}"]),
    }


@pytest.fixture
def digit(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "digit.png"
    image = Image.new("L", (28, 28), 0)
    image.paste(255, (12, 6, 16, 22))  # a stroke: a 1, not a blank page (which gets a warning)
    image.save(path)
    return path


@pytest.mark.parametrize("attack", list(attacks(Path("m"), Path("v"))))
def test_crafted_configs_are_refused_and_nothing_runs(
    attack, good_run, tiny_mnist, tmp_path, victim, digit, capsys
):
    marker = tmp_path / "marker"
    key, value = attacks(marker, victim)[attack]
    checkpoint = load_checkpoint(good_run / "checkpoints" / "best.pt")
    crafted = tmp_path / "checkpoints" / "crafted.pt"
    crafted.parent.mkdir()
    torch.save(with_config_value(checkpoint, key, value), crafted)
    for name, use in uses(crafted, tiny_mnist, digit, tmp_path).items():
        if name == "predict":
            with pytest.raises(SystemExit) as exited:
                use()
            assert exited.value.code == 2
            message = capsys.readouterr().err
            assert message.startswith("error: refused") and message.count("\n") == 1, message
        else:
            with pytest.raises(UserError, match=r"^refused .*Nothing in it was run") as refused:
                use()
            assert "\n" not in str(refused.value)
        assert not marker.exists() and not marker.is_symlink(), f"{attack} ran code through {name}"
        assert victim.read_text() == "precious\n", f"{attack} touched the victim through {name}"


def test_the_stealth_checkpoint_is_refused_by_the_command_line(
    good_run, tiny_mnist, tmp_path, victim, digit
):
    marker = tmp_path / "marker"
    key, value = attacks(marker, victim)["stealth pickle in a number"]
    crafted = tmp_path / "student.pt"
    torch.save(
        with_config_value(load_checkpoint(good_run / "checkpoints" / "best.pt"), key, value),
        crafted,
    )
    for command in (
        ["dlcourse-predict", str(crafted), str(digit)],
        ["dlcourse-eval", f"ckpt_path={crafted}"],
        ["dlcourse-train", f"resume={crafted}"],
    ):
        result = run_command(command, tmp_path, tiny_mnist)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: refused") and result.stderr.count("\n") == 1, (
            result.stderr
        )
        assert (
            "model.num_classes._args_" in result.stderr
            or "model.num_classes._target_" in result.stderr
        )
        assert not marker.exists()
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs" / "runs").iterdir())


# --- a fuzzed stored config: random types, lists for dicts, missing keys, huge numbers ----------


def all_paths(node: object, prefix: tuple = ()) -> list[tuple]:
    if isinstance(node, dict):
        return [prefix] + [
            p for key, value in node.items() for p in all_paths(value, (*prefix, key))
        ]
    if isinstance(node, list):
        return [prefix] + [
            p for index, value in enumerate(node) for p in all_paths(value, (*prefix, index))
        ]
    return [prefix]


def fuzz(config: dict, generator: random.Random, marker: Path) -> dict:
    """The config with one random entry replaced by a value of another kind, or removed."""
    path = generator.choice([p for p in all_paths(config) if p])
    replacements = [
        None,
        True,
        -1,
        0,
        10**30,
        2**64,
        -(2**70),
        1e308,
        math.nan,
        math.inf,
        "",
        "x" * 300,
        "${oc.env:HOME}",
        [],
        [1, "a"],
        [[1]],
        {},
        {"a": {"b": 1}},
        ["_target_"],
        {"_target_": "os.system", "_args_": [f"touch {marker}"]},
        DELETE,
    ]
    return replaced(config, path, generator.choice(replacements))


def test_fuzzed_stored_configs_are_refused_in_one_line_or_harmless(
    good_run, tiny_mnist, tmp_path, digit, capsys
):
    marker = tmp_path / "marker"
    checkpoint = load_checkpoint(good_run / "checkpoints" / "best.pt")
    generator = random.Random(0)
    outcomes = {"refused": 0, "ran": 0}
    for trial in range(60):
        crafted_path = tmp_path / f"fuzz{trial}.pt"
        torch.save(
            {**checkpoint, "config": fuzz(checkpoint["config"], generator, marker)}, crafted_path
        )
        for name, use in uses(crafted_path, tiny_mnist, digit, tmp_path).items():
            try:
                use()
                outcomes["ran"] += 1
            except UserError as error:
                assert "\n" not in str(error), (trial, name, str(error))
                outcomes["refused"] += 1
            except SystemExit as exited:  # predict's command-line wrapper
                assert exited.code == 2, (trial, name)
                assert capsys.readouterr().err.count("\n") == 1, (trial, name)
                outcomes["refused"] += 1
            assert not marker.exists(), (trial, name)
    # Most changes are refused; the rest are harmless (a setting that the use reads nothing of).
    assert outcomes["refused"] > outcomes["ran"] > 0, outcomes


# --- checkpoints with the right keys but inconsistent contents --------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["model"].update({"hidden.0.weight": torch.zeros(3, 3)}),
            "do not fit the model its config describes",
        ),
        (
            lambda c: c["model"].update({"head.bias": torch.full((10,), math.nan)}),
            "NaN or infinite weights",
        ),
        (lambda c: c.update(config=["model", "mlp"]), "its config is a list, not a mapping"),
        (lambda c: c.update(config="model: mlp"), "its config is a str, not a mapping"),
        (lambda c: c.pop("input_shape"), "has no valid input_shape"),
        (lambda c: c.update(task="captioning"), "names task 'captioning'"),
        (lambda c: c["config"].pop("trainer"), "its config's trainer is missing"),
        (lambda c: c.update(model=[1, 2]), "its model is not a mapping of names to tensors"),
        (lambda c: c.update(class_names=[3, 4]), "class_names that are not a list of names"),
        (
            lambda c: c["preprocessing"].update(std=[0.0]),
            "preprocessing entry that dlcourse-train does not write",
        ),
        (
            lambda c: c["preprocessing"].update(mean=[math.inf]),
            "preprocessing entry that dlcourse-train does not write",
        ),
        (
            lambda c: c.update(preprocessing={"kind": "image", "mean": [0.5], "std": [0.5]}),
            "preprocessing entry that dlcourse-train does not write",  # no size, no channels
        ),
        (
            lambda c: c.update(preprocessing={"kind": "shell", "mean": [0], "std": [1]}),
            "preprocessing entry that dlcourse-train does not write",
        ),
    ],
)
def test_inconsistent_checkpoints_are_refused_in_one_line(
    change, message, good_run, tmp_path, digit, capsys
):
    checkpoint = load_checkpoint(good_run / "checkpoints" / "best.pt")
    change(checkpoint)
    torch.save(checkpoint, tmp_path / "odd.pt")
    with pytest.raises(SystemExit) as exited:
        predict([str(tmp_path / "odd.pt"), str(digit)])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and message in error and error.count("\n") == 1, error


def test_a_checkpoint_without_its_training_state_cannot_be_resumed(good_run, tiny_mnist, tmp_path):
    checkpoint = load_checkpoint(good_run / "checkpoints" / "last.pt")
    del checkpoint["epoch"]
    torch.save(checkpoint, tmp_path / "no_epoch.pt")
    cfg = compose_config(quick_overrides(tiny_mnist))
    cfg.resume = str(tmp_path / "no_epoch.pt")
    with pytest.raises(UserError, match="cannot be resumed: its 'epoch' is missing"):
        resume_config(cfg, [])
