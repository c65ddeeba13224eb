"""Batched members: several runs of one architecture trained as one batched model, in one process.

    dlcourse-train experiment=fast_mlp_mnist seeds=5 trainer.batch_members=true
    dlcourse-train -m hydra/launcher=batched experiment=fast_mlp_mnist optimizer.lr=1e-3,3e-3

The members may differ only in their seed (initialisation, data order, validation images) and
the optimizer's and scheduler's scalar settings (learning rate, momentum, weight decay, ...).
Each is a whole run, in its own folder, with its own data, optimizer, schedule, metrics,
checkpoints and logs; every command takes it as it takes any run. What they share is the forward
and backward pass: their weights are stacked, (K, ...), and `torch.func.vmap` runs their K
forwards as one on the stack of their K batches. Each member's own module holds views of the
stacks, so its optimizer updates, evaluation and checkpoints are a separate run's code
(trainer.py); only `MemberGroup.train_one_epoch` and `train_step` are the group's.

Reading order: `train_members`, then `MemberGroup.train_step` and `StackedWeights` in
member_group.py.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlcourse.infrastructure.config import to_plain_dict
from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.interrupt import StopSignal
from dlcourse.infrastructure.runtime import startup_objects_frozen
from dlcourse.infrastructure.schema import TrainerSettings, validate_config
from dlcourse.resume import restore
from dlcourse.run import (
    announce,
    build_components,
    hparams_metrics,
    prepare_training,
    run_outputs,
    setup_runtime,
)
from dlcourse.sweeps.member_group import MemberGroup, StackedWeights
from dlcourse.trainer import Trainer

log = logging.getLogger(__name__)

# The settings in which members may differ (besides these, every setting must be the same); an
# image folder's normalisation is measured on the seed's training split, and stored on resume.
MEMBER_SETTINGS = ("seed", "dataset.seed", "dataset.mean", "dataset.std", "optimizer.",
                   "scheduler.", "resume", "tags")  # fmt: skip


def train_members(
    cfgs: list[DictConfig],
    output_dirs: list[Path],
    checkpoints: list[dict | None],
    hparams: list[dict],
    folders: list[AbstractContextManager],
) -> list[dict | Exception]:
    """Train the runs `cfgs` (into `output_dirs`, continuing `checkpoints`, each folder claimed
    by its `folders`) as one batched model. Returns each member's metrics, or the error that
    ended it (a member that diverges stops alone; the others go on)."""
    configs = [to_plain_dict(cfg) for cfg in cfgs]
    for config in configs:
        validate_config(config)
    check_batchable(configs, checkpoints)
    failures: dict[int, Exception] = {}
    names = [f"{output_dir.name}: " for output_dir in output_dirs]
    with ExitStack() as claimed:
        for index, folder in enumerate(folders):
            folder.__enter__()  # each exits with its own member's error, if it had one
            claimed.push(partial(leave_folder, folder, index, failures))
            keep_own_lines(folder, names[index], names)
        trainers = [member_trainer(*member) for member in zip(cfgs, output_dirs, checkpoints)]
        stacked = StackedWeights([trainer.raw_model for trainer in trainers])
        for trainer, cfg, checkpoint in zip(trainers, cfgs, checkpoints):
            if checkpoint:
                restore(trainer, checkpoint, cfg.resume)
        log.info("%d members, trained as one batched model: %s", len(trainers),
                 ", ".join(name.rstrip(": ") for name in names))  # fmt: skip
        try:
            with startup_objects_frozen(), StopSignal() as stop_signal:
                results = MemberGroup(trainers, stacked, stop_signal).fit()
        except BaseException:
            for trainer in trainers:
                trainer.logger.close()
            raise
        stacked.release()  # each member's weights on their own again, to be written alone
        for index, (trainer, result) in enumerate(zip(trainers, results)):
            if isinstance(result, Exception):
                failures[index] = result
                trainer.logger.close()
            else:
                write_member_results(trainer, result, hparams[index])
    return results


def leave_folder(
    folder: AbstractContextManager, index: int, failures: dict[int, Exception], *exit_info: Any
) -> None:
    """A member's folder let go of as its run ended: with its own error, if it failed alone."""
    error = exit_info[1] or failures.get(index)
    folder.__exit__(type(error) if error else None, error, None)


class OwnLines(logging.Filter):
    """A member's train.log keeps its own lines and the group's, not the other members'."""

    def __init__(self, own: str, names: list[str]) -> None:
        super().__init__()
        self.others = tuple(name for name in names if name != own)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.others)


def keep_own_lines(folder: AbstractContextManager, name: str, names: list[str]) -> None:
    handler = getattr(folder, "log_handler", None)  # RunFolder's train.log (none: a twin's)
    if handler is not None:
        handler.addFilter(OwnLines(name, names))


def check_batchable(configs: list[dict], checkpoints: list[dict | None]) -> None:
    """Refuse, in one line and before any folder is claimed, members that differ in more than
    seeds and scalar optimizer and scheduler settings, stopped at different steps, or settings
    that a batched model cannot honour."""
    first = flatten(configs[0])
    for config in configs[1:]:
        other = flatten(config)
        differing = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        differing = [k for k in differing if not k.startswith(MEMBER_SETTINGS) or "_target_" in k]
        if differing:
            raise UserError(
                f"batched members may differ only in seed and optimizer or scheduler settings, "
                f"not in {', '.join(differing[:5])}: train them one at a time "
                f"(trainer.batch_members=false, or a launcher other than batched)"
            )
    steps = sorted({checkpoint["step"] if checkpoint else 0 for checkpoint in checkpoints})
    if len(steps) > 1:
        raise UserError(
            f"the members stopped at different steps ({', '.join(map(str, steps))}): resume them "
            "one at a time (trainer.batch_members=false)"
        )
    settings = TrainerSettings(**configs[0]["trainer"])
    unbatchable = {
        "trainer.compile": settings.compile,
        "trainer.early_stopping.patience": settings.early_stopping.get("patience"),
        "trainer.precision=16-mixed": settings.precision == "16-mixed",
        "trainer.profile_steps": settings.profile_steps,
        "trainer.detect_anomaly": settings.detect_anomaly,
    }
    for name, value in unbatchable.items():
        if value:
            raise UserError(
                f"{name} works on one run at a time: leave it out, or train the members one at "
                "a time (trainer.batch_members=false)"
            )


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def member_trainer(cfg: DictConfig, output_dir: Path, checkpoint: dict | None) -> Trainer:
    """One member's trainer, built as `run.train` builds a run's, from the same seed on: so
    its data, initial weights, optimizer and schedule are a separate run's."""
    settings = TrainerSettings(**to_plain_dict(cfg.trainer))
    processes, device = setup_runtime(settings, cfg.seed)
    if processes.world_size > 1:
        raise UserError("batched members train in one process: start them without torchrun")
    data, model, loss_fn, config = build_components(cfg, device, processes)
    model, optimizer, scheduler = prepare_training(
        cfg, model, len(data.train), settings, processes, device, checkpoint is not None
    )
    if optimizer is None:
        raise UserError(
            f"{type(model).__name__} learns without gradients: train it without batched members"
        )
    logger, files = run_outputs(config, output_dir, processes, checkpoint)
    announce(cfg, data, model, settings, device, output_dir, {})
    logger.log_train_and_val(["loss", data.task.monitor])
    # fmt: off
    trainer = Trainer(model, loss_fn, optimizer, scheduler, data, logger, settings, device,
                      files=files, config=config, processes=processes)
    # fmt: on
    trainer.name = f"{output_dir.name}: "
    return trainer


def write_member_results(trainer: Trainer, metrics: dict, hparams: dict) -> None:
    """What `run.train` writes at a run's end, for one member."""
    final = hparams_metrics(metrics, trainer.data.task.monitor)
    logger = trainer.logger
    logger.log_hparams(hparams, final, metrics.get("steps", 0))
    logger.close()
    trainer.files.write_results(metrics, trainer.raw_model, trainer.config["model"])
    logger.log_files(trainer.files.output_dir)
    if not trainer.settings.keep_checkpoints:
        trainer.files.remove_checkpoints()
    log.info("%sRun folder: %s", trainer.name, trainer.files.output_dir)
