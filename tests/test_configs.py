"""Every YAML under configs/ composes, and its components instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_config, quick_overrides

from dlcourse.data import DataSplits
from dlcourse.infrastructure.config import build, config_dir, fill_model_sizes, to_plain_dict
from dlcourse.infrastructure.schema import TrainerSettings, validate_config
from dlcourse.run import fill_from_data

CONFIGS = Path(config_dir())
COMPONENT_GROUPS = [
    "model",
    "dataset",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "mask",
    "paths",
    "experiment",
    "launcher",
    "hparams_search",
]
OPTIONS = [
    (group, path.stem)
    for group in COMPONENT_GROUPS
    for path in sorted((CONFIGS / group).glob("*.yaml"))
]


def test_every_group_file_is_covered():
    groups = {path.parent.name for path in CONFIGS.glob("*/*.yaml")}
    assert groups == set(COMPONENT_GROUPS) | {"hydra", "logger", "debug"}


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONFIGS / "debug").glob("*.yaml")))
def test_each_debug_preset_composes_into_valid_settings(option):
    from dlcourse.infrastructure.command_line import quote_paths

    # As the commands pass it: debug=nan is quoted for Hydra, which reads nan as a number.
    config = to_plain_dict(compose_config(quote_paths([f"debug={option}"])))
    validate_config(config)
    defaults = TrainerSettings(**to_plain_dict(compose_config([]))["trainer"])
    assert TrainerSettings(**config["trainer"]) != defaults  # each changes the training loop


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONFIGS / "logger").glob("*.yaml")))
def test_each_logger_config_composes_and_builds(option, tmp_path):
    from dlcourse.infrastructure.logger_choice import LOGGERS, build_loggers

    if option == "mlflow":
        pytest.importorskip("mlflow", reason='logger=mlflow needs pip install -e ".[mlflow]"')
    chosen = to_plain_dict(compose_config([f"logger={option}"]))["logger"]
    assert list(chosen) == [option] and option in LOGGERS
    logger = build_loggers(chosen, tmp_path / "run", tmp_path, purge_step=None)
    logger.log_scalars({"train/loss": 0.5}, 1)
    logger.close()


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_config_composes_and_instantiates(group, option, tiny_mnist, tiny_pairs, tiny_images):
    if option == "inpainting_folder":
        overrides = [
            *quick_overrides(tiny_mnist, mnist_sizes=False),
            f"dataset.data_dir={tiny_pairs}",
        ]
    elif option in ("image_folder", "alexnet"):  # AlexNet takes images of 63×63 and more
        overrides = [
            *quick_overrides(tiny_mnist, mnist_sizes=False),
            "dataset=image_folder",
            f"dataset.root={tiny_images}",
            f"dataset.image_size={64 if option == 'alexnet' else 32}",
        ]
    elif option in ("spirals", "xor"):  # 2-D toy points, dataset or experiment
        overrides = [*quick_overrides(tiny_mnist, mnist_sizes=False), "dataset.num_train=200"]
    else:
        overrides = quick_overrides(tiny_mnist)
    if option == "overfit_mnist":  # its 500 images are more than the tiny data has
        overrides.append("dataset.train_subset=100")
    if group == "mask":  # holes belong to the inpainting dataset
        overrides.append("dataset=inpainting")
    cfg = compose_config([f"{group}={option}", *overrides])
    data = build(cfg, "dataset", device="cpu")
    assert isinstance(data, DataSplits)
    fill_from_data(cfg, data)  # the model's sizes left to the data, as a run fills them
    model = build(cfg, "model")
    assert isinstance(model, torch.nn.Module)
    assert isinstance(build(cfg, "loss"), torch.nn.Module)
    # Classical methods (template_ncc, nearest_neighbor) have nothing to optimise: the optimizer
    # config is built over a stand-in parameter for them.
    params = list(model.parameters()) or [torch.nn.Parameter(torch.zeros(1))]
    optimizer = build(cfg, "optimizer", params=params)
    assert isinstance(optimizer, torch.optim.Optimizer)
    scheduler = build(cfg, "scheduler", optimizer=optimizer, total_steps=20, steps_per_epoch=10)
    assert callable(scheduler.step) and isinstance(scheduler.state_dict(), dict)
    validate_config(to_plain_dict(cfg))
    assert TrainerSettings(**to_plain_dict(cfg)["trainer"]).epochs == 2


def test_hydra_settings_give_each_run_its_own_folder():
    first = compose_config(hydra=True).hydra
    second = compose_config(hydra=True).hydra
    assert first.run.dir.startswith("outputs/runs/") and first.sweep.dir.startswith(
        "outputs/multirun/"
    )
    assert first.run.dir != second.run.dir  # a random suffix, even within the same second
    assert first.job.chdir is False


def test_eval_config_composes():
    cfg = compose_config(["ckpt_path=some/best.pt"], config_name="eval")
    assert cfg.ckpt_path == "some/best.pt" and cfg.device == "auto"


def test_every_yaml_opens_with_a_comment_giving_its_command():
    for path in CONFIGS.rglob("*.yaml"):
        lines = [
            line for line in path.read_text().splitlines() if not line.startswith("# @package")
        ]
        assert lines[0].startswith("# "), f"{path} should open with a comment line"


@pytest.mark.parametrize("name", ["gradcheck", "summary"])
def test_tool_configs_compose_with_any_model(name):
    for model in ("linear", "cnn", "conv_inpaint"):
        cfg = compose_config([f"model={model}"], config_name=name)
        fill_model_sizes(cfg.model, cfg.input_shape, cfg.get("num_classes"))
        assert isinstance(build(cfg, "model"), torch.nn.Module)
        assert list(cfg.input_shape) == [1, 28, 28]


def test_trainer_settings_defaults_are_the_yaml_defaults():
    """configs/trainer/default.yaml is where users read the defaults; TrainerSettings types them."""
    from dataclasses import asdict

    from omegaconf import OmegaConf

    yaml_defaults = OmegaConf.to_container(OmegaConf.load(CONFIGS / "trainer" / "default.yaml"))
    assert asdict(TrainerSettings()) == asdict(TrainerSettings(**yaml_defaults))
    assert list(asdict(TrainerSettings())) == list(yaml_defaults)  # same keys, same order


def test_runtime_arguments_are_the_ones_the_run_passes(tiny_mnist, tmp_path, monkeypatch):
    """schema.RUNTIME_ARGUMENTS (arguments no config may set) against what run.train passes."""
    from dlcourse import run
    from dlcourse.infrastructure.schema import RUNTIME_ARGUMENTS

    passed: dict[str, set[str]] = {}
    original = run.build

    def recording_build(cfg, key, **runtime):
        passed[key] = set(runtime)
        return original(cfg, key, **runtime)

    monkeypatch.setattr(run, "build", recording_build)
    run.train(compose_config([*quick_overrides(tiny_mnist), "trainer.epochs=1"]), tmp_path)
    assert passed == RUNTIME_ARGUMENTS


@pytest.mark.parametrize(
    "path", sorted((CONFIGS / "experiment").glob("*.yaml")), ids=lambda p: p.stem
)
def test_each_experiment_names_the_components_it_composes(path):
    """A preset says, in its opening comment, which classes and functions it builds, so that a
    reader goes from the YAML to the code without opening the group files (and it cannot drift)."""
    text = " ".join(
        line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#")
    )
    named = text.split("Composes: ", 1)[1].split(", ")
    cfg = compose_config([f"experiment={path.stem}"])
    groups = ("model", "dataset", "loss", "optimizer", "scheduler")
    assert [item.strip().rstrip(",") for item in named] == [
        f"{g} {cfg[g]._target_}" for g in groups
    ]
