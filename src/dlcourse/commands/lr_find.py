"""Find a learning rate for any training config, then train at it.

    dlcourse-lr-find experiment=fast_mlp_mnist
    dlcourse-lr-find model=cnn optimizer=sgd lr_find.steps=200     # any dlcourse-train setting

Trains fresh weights for up to `lr_find.steps` steps, the learning rate growing from
`lr_find.start_lr` to `lr_find.end_lr` (configs/lr_find.yaml), stops once the loss diverges,
and writes lr_find.png (loss against learning rate, the suggestion marked) and lr_find.json to
outputs/lr_find/<time>_<name>_<id>/. It prints the suggested rate (dlcourse/lr_finder.py: one of
fastai's rules, `lr_find.rule`) and the dlcourse-train command that uses it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dlcourse.infrastructure.command_line import shell_quote
from dlcourse.infrastructure.config import build, config_dir, register_resolvers, to_plain_dict
from dlcourse.infrastructure.errors import UserError, exit_on_user_error
from dlcourse.infrastructure.files import write_file
from dlcourse.infrastructure.run_files import RunFiles
from dlcourse.infrastructure.run_folder import LR_FIND, RunFolder
from dlcourse.infrastructure.schema import TrainerSettings, validate_config
from dlcourse.lr_finder import RULES, LearningRateCurve, exponential_rates, find_learning_rate
from dlcourse.pictures.charts import learning_rate_image
from dlcourse.run import build_components, setup_runtime

log = logging.getLogger(__name__)
register_resolvers()  # the run folder's name: configs/hydra/default.yaml


def find(cfg: DictConfig, output_dir: Path, overrides: list[str]) -> LearningRateCurve:
    """Data, model, loss and optimizer as dlcourse-train builds them; the sweep of rates; the
    picture, the numbers and the command to train at the suggestion."""
    settings = cfg.lr_find
    if settings.rule not in RULES:
        raise UserError(
            f"lr_find.rule={settings.rule} is not a rule; use one of: {', '.join(RULES)}"
        )
    if not 0 < settings.start_lr < settings.end_lr or settings.steps < 10:
        raise UserError(
            f"lr_find needs 0 < start_lr < end_lr and steps ≥ 10 (got start_lr="
            f"{settings.start_lr}, end_lr={settings.end_lr}, steps={settings.steps})"
        )
    config = {key: value for key, value in to_plain_dict(cfg).items() if key != "lr_find"}
    validate_config(config)
    processes, device = setup_runtime(TrainerSettings(**config["trainer"]), cfg.seed)
    data, model, loss_fn, _ = build_components(cfg, device, processes)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"{type(model).__name__} learns without gradients: it has no learning rate")
    optimizer = build(cfg, "optimizer", params=model.parameters())
    rates = exponential_rates(settings.start_lr, settings.end_lr, settings.steps)
    curve = find_learning_rate(model, loss_fn, optimizer, data.train, device, rates,
                               settings.stop_factor, settings.rule)  # fmt: skip
    command = train_command(overrides, curve.suggestion)
    picture = learning_rate_image(curve.learning_rates, curve.losses, curve.smoothed,
                                  curve.suggestion, settings.rule)  # fmt: skip
    RunFiles(output_dir).save_image("lr_find", picture)
    result = asdict(curve) | {"train_with": command}
    write_file(output_dir / LR_FIND, json.dumps(result, indent=2) + "\n", root=output_dir)
    report(curve, command, output_dir)
    return curve


def train_command(overrides: list[str], suggestion: float | None) -> str | None:
    """The dlcourse-train command of these settings, at the suggested learning rate."""
    if suggestion is None:
        return None
    kept = [o for o in overrides if not o.startswith(("lr_find.", "optimizer.lr=", "hydra."))]
    words = ["dlcourse-train", *kept, f"optimizer.lr={suggestion:.3g}"]
    return " ".join(shell_quote(word) for word in words)


def report(curve: LearningRateCurve, command: str | None, output_dir: Path) -> None:
    tried = f"{len(curve.learning_rates)} steps, lr {curve.learning_rates[0]:.1e} to " \
            f"{curve.learning_rates[-1]:.1e}; stopped: {curve.stopped_because}"  # fmt: skip
    log.info("lr finder: %s", tried)
    if command is None:
        log.warning("No suggestion: the loss never fell; try a smaller lr_find.start_lr")
    else:
        log.info(
            "Suggested learning rate: %.3g. Train at it with:\n  %s", curve.suggestion, command
        )
    others = [f"{name} {lr:.3g}" for name, lr in curve.suggestions.items() if lr is not None]
    log.info("Each rule's suggestion: %s (lr_find.rule picks one)", ", ".join(others))
    log.info("Curve: %s", output_dir / "lr_find.png")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="lr_find")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    with RunFolder(output_dir, resuming=False, cfg=cfg, hydra_cfg=hydra_cfg):
        find(cfg, output_dir, list(hydra_cfg.overrides.task))


if __name__ == "__main__":
    main()
