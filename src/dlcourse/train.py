"""Train a model from a Hydra config.

    dlcourse-train                                      # the defaults in configs/train.yaml
    dlcourse-train model=cnn optimizer.lr=0.05 trainer.epochs=3
    dlcourse-train experiment=cnn_mnist
    dlcourse-train -m model=linear,mlp optimizer.lr=0.01,0.1   # a sweep (Hydra multirun)
    python -m dlcourse.train --help                     # the config groups and their options

`train(cfg, output_dir)` builds the whole run in order and returns its metrics; `main` is the
thin Hydra wrapper around it, so tests call `train` with a composed config and a tmp_path.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dlcourse.config import build, config_dir, register_resolvers, to_plain_dict
from dlcourse.errors import UserError, exit_on_user_error
from dlcourse.loggers import TensorBoardLogger, flatten_hparams
from dlcourse.runtime import seed_everything, select_device
from dlcourse.trainer import Trainer, TrainerSettings

log = logging.getLogger(__name__)


def train(cfg: DictConfig, output_dir: str | Path) -> dict[str, float]:
    """Data → model → loss → optimizer → scheduler → logger → trainer; fit; write metrics.json."""
    output_dir = Path(output_dir)
    config = to_plain_dict(cfg)
    settings = trainer_settings(config["trainer"])
    seed_everything(cfg.seed)
    device = select_device(settings.device)

    data = build(cfg, "dataset", device=device)
    model = build(cfg, "model").to(device)
    check_model_fits(model, data.input_shape, device)
    loss_fn = build(cfg, "loss")
    optimizer = build(cfg, "optimizer", params=model.parameters())
    steps_per_epoch = min(len(data.train), settings.limit_train_batches or math.inf)
    scheduler = build(
        cfg, "scheduler", optimizer=optimizer,
        total_steps=steps_per_epoch * settings.epochs, steps_per_epoch=steps_per_epoch,
    )
    logger = TensorBoardLogger(output_dir)
    trainer = Trainer(
        model, loss_fn, optimizer, scheduler, data, logger, settings, device,
        checkpoint_dir=output_dir / "checkpoints", config=config,
    )
    try:
        metrics = trainer.fit()
        logger.log_hparams(flatten_hparams(config), [k for k in metrics if "/" in k])
    finally:
        logger.close()

    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("Run folder: %s", output_dir)
    log.info("Look at it with: tensorboard --logdir %s", shortest_path(output_dir.parent))
    return metrics


def shortest_path(path: Path) -> str:
    """`path` relative to the current folder when it lies inside it (what a user would type)."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def trainer_settings(values: dict) -> TrainerSettings:
    try:
        return TrainerSettings(**values)
    except TypeError as error:  # an unknown key under trainer:
        raise UserError(f"bad trainer settings: {error}; see configs/trainer/default.yaml") from None


def check_model_fits(model: torch.nn.Module, input_shape: tuple[int, ...], device: torch.device) -> None:
    """Fail before training, in one sentence, when the model cannot take the dataset's images."""
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape, device=device))
    except RuntimeError as error:
        raise UserError(
            f"{type(model).__name__} cannot take this dataset's inputs of shape {tuple(input_shape)}: "
            f"{str(error).splitlines()[0]}. Pick a model made for them (e.g. model=cnn for MNIST)"
        ) from None
    finally:
        model.train()


register_resolvers()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg, HydraConfig.get().runtime.output_dir)
    # Sweepers (e.g. Optuna) maximise what the task function returns.
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
