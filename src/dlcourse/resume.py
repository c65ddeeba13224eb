"""Continuing a stopped run: `dlcourse-train resume=outputs/runs/<run> [trainer.epochs=8 ...]`.

The resumed run is the stopped run's own config (read from its checkpoint and checked like any
file you did not write, see `stored_config`) with this command line's overrides on top.
Only overrides that keep it the same run are taken: the trainer's settings, the optimizer's
(applied to the restored optimizer), where the data lives. Anything that would make the saved
state mean something else (another model, loss, seed or schedule, fewer epochs than are done)
is refused in one line before anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from dlcourse.data.image_layout import check_folder_classes
from dlcourse.infrastructure.checkpoint import find_checkpoint, load_checkpoint
from dlcourse.infrastructure.command_line import CHANGEABLE_ON_RESUME
from dlcourse.infrastructure.config import run_folder_of_resume
from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.files import read_small
from dlcourse.infrastructure.run_folder import (
    BEST,
    CHECKPOINTS,
    LAST,
    METRICS,
    RECORD,
    group_seeds,
    read_record,
)
from dlcourse.infrastructure.stored_config import stored_config
from dlcourse.infrastructure.training_state import Position, check_resumable, check_training_state
from dlcourse.trainer import Trainer

log = logging.getLogger(__name__)

# Config groups that only say where or how jobs run, not what is trained.
LAUNCH_GROUPS = ("launcher", "hparams_search", "logger")  # how it runs and logs, not what
# Schedules whose length is fixed when the run starts.
FIXED_LENGTH = ("dlcourse.schedulers.onecycle", "dlcourse.schedulers.cosine")


def run_config(
    cfg: DictConfig, overrides: list[str], run_dir: Path
) -> tuple[DictConfig, dict | None]:
    """The config this run uses and the checkpoint it continues (None: a new run); a resume's
    overrides are checked here, the whole config by `dlcourse.run.train`, both before anything
    is written. A resume's config comes from its checkpoint; `resume=auto`
    continues the run folder's own run when it has a checkpoint (a requeued cluster job)."""
    repeated: list[str] = []
    if cfg.get("resume") == "auto":
        last = run_dir / CHECKPOINTS / LAST
        in_group = group_seeds(run_dir) is not None
        cfg.resume = str(run_dir) if in_group else str(last) if last.is_file() else None
        repeated = read_record(run_dir)[1]  # the command line the run started with
    checkpoint = None
    if group_seeds(cfg.get("resume")) is not None:  # each seed's run resumes on its own
        return group_config(cfg, overrides, repeated), None
    if cfg.get("resume"):
        cfg, checkpoint = resume_config(cfg, overrides, repeated)
    return cfg, checkpoint


def resume_config(
    cfg: DictConfig, overrides: list[str], repeated: list[str] = ()
) -> tuple[DictConfig, dict]:
    """The stopped run's config with the command line's `key=value` overrides on top, and its
    checkpoint.

    `overrides` are the command line's (Hydra's task overrides); `repeated`, the ones the run
    started with, which a requeued cluster job (resume=auto) repeats and which change nothing.
    """
    path = find_checkpoint(cfg.resume)
    checkpoint = load_checkpoint(path)
    check_resumable(checkpoint, path)
    stored = stored_config(checkpoint["config"], path)
    check_latest(path, checkpoint)
    resumed = with_updates(stored, overrides, repeated)
    resumed.resume = str(path)
    from_command_line(resumed, cfg)
    check_folder_classes(checkpoint, resumed.dataset, path)  # before any data is read
    check_length(resumed, stored, checkpoint, path)
    return resumed, checkpoint


def group_config(cfg: DictConfig, overrides: list[str], repeated: list[str] = ()) -> DictConfig:
    """A stopped seed group's config (its record, checked as a file you did not write) with the
    command line's overrides on top, under the same rules as a run's (dlcourse/sweeps/seeds.py)."""
    import yaml

    path = Path(cfg.resume) / RECORD / "config.yaml"
    try:
        config = yaml.safe_load(read_small(path))
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as error:
        raise UserError(
            f"cannot resume the seed group in {cfg.resume}: {path} could not be read "
            f"({type(error).__name__}); resume its seeds' runs one by one instead"
        ) from None
    stored = stored_config(config, path)
    resumed = with_updates(stored, overrides, repeated)
    resumed.resume = str(cfg.resume)
    return resumed


def from_command_line(resumed: DictConfig, cfg: DictConfig) -> None:
    """Where a resumed run logs, and where its shared stores go (paths.output_dir: MLflow's
    mlflow.db), are this command line's: never the checkpoint's (a file you did not write could
    name a server to send the run to)."""
    with open_dict(resumed):
        resumed.logger = OmegaConf.create(OmegaConf.to_container(cfg.get("logger") or {}))
        if OmegaConf.is_dict(resumed.get("paths")) and "paths" in cfg:
            resumed.paths.output_dir = cfg.paths.output_dir


def with_updates(stored: DictConfig, overrides: list[str], repeated: list[str]) -> DictConfig:
    """`stored` with the command line's overrides on top, each checked to keep it the same run
    (resume= itself, and what the run started with, are not overrides)."""
    updates = [
        o.lstrip("+")
        for o in overrides
        if not o.startswith(("resume=", "+resume=")) and o not in repeated
    ]
    for update in updates:
        check_override(update, stored)
    return OmegaConf.merge(stored, OmegaConf.from_dotlist(updates))


def check_latest(path: Path, checkpoint: dict[str, Any]) -> None:
    """Resuming from an older checkpoint of a run (best.pt) would overwrite its later state."""
    last = path.parent / LAST
    if (
        path.name != LAST
        and last.is_file()
        and load_checkpoint(last).get("step", 0) > checkpoint["step"]
    ):
        raise UserError(
            f"{path} (step {checkpoint['step']}) is older than {last} of the same run; resuming "
            f"from it would overwrite what came after. Resume the run folder (its {LAST}) instead"
        )


def check_override(update: str, stored: DictConfig) -> None:
    """Refuse an override that would change what the stopped run was training."""
    key, _, value = update.partition("=")
    if key.split(".")[0] in LAUNCH_GROUPS:
        return
    if "." not in key and key not in ("seed", "optimized_metric"):
        raise UserError(
            f"'{update}' cannot change a resumed run's components; on resume, only overrides of "
            "single settings apply (e.g. trainer.epochs=10 trainer.device=cpu)"
        )
    if key.startswith(CHANGEABLE_ON_RESUME) or key == "optimized_metric":
        if key == "optimizer.lr" and stored.scheduler._target_ != "dlcourse.schedulers.constant":
            raise UserError(
                f"'{update}': the run's scheduler sets its learning rate, so a new optimizer.lr "
                f"would not be used; resume without it, or start a new run"
            )
        return
    new = OmegaConf.select(OmegaConf.from_dotlist([update]), key)
    if OmegaConf.select(stored, key, default="<missing>") != new:
        raise UserError(
            f"'{update}' would change what the stopped run was training; on resume only trainer.*, "
            "optimizer.* and where the data is (dataset.data_dir) may change. Start a new run for "
            "it"
        )


def check_length(
    resumed: DictConfig, stored: DictConfig, checkpoint: dict[str, Any], path: Path
) -> None:
    """Refuse a resume with nothing left to train, or one a fixed-length schedule cannot follow."""
    epoch, epochs = checkpoint["epoch"], resumed.trainer.epochs
    if epochs < epoch and is_unfinished(path):
        log.info("Training had finished in %s; running its final test.", path)
    elif epochs < epoch:
        done = f"has trained {epoch - 1} epochs" + (
            f" and part of epoch {epoch}" if checkpoint["batch_in_epoch"] else ""
        )
        raise UserError(
            f"the run in {path} {done}: trainer.epochs={epochs} leaves nothing to train. To train "
            f"longer, pass trainer.epochs={max(epoch, epochs + 1)} or more (its results stay as "
            f"they are)"
        )
    length = ("epochs", "limit_train_batches")
    if resumed.scheduler._target_ in FIXED_LENGTH and any(
        resumed.trainer.get(k) != stored.trainer.get(k) for k in length
    ):
        name = resumed.scheduler._target_.rsplit(".", 1)[1]
        raise UserError(
            f"scheduler={name} fixed the run's length ({stored.trainer.epochs} epochs) when it "
            f"started, so it cannot follow a new trainer.epochs or trainer.limit_train_batches; "
            f"resume with the same ones, or start a new run (scheduler=step or none can be "
            f"extended)"
        )


def is_unfinished(path: Path) -> bool:
    """Whether the run of checkpoint `path` never wrote its results (killed during its final
    test, or the disk filled as it exported its weights): resuming it runs what is missing."""
    folder = run_folder_of_resume(str(path))
    return folder is None or not (folder / METRICS).is_file()


def carry_best_over(trainer: Trainer, path: Path) -> None:
    """A checkpoint resumed into a new folder (branching off a run) brings its run's best.pt
    along when it lies beside it; without it, this run's best is judged anew from its own
    evaluations. Every rank decides alike (from the same files)."""
    path = find_checkpoint(path)  # `resume=` may name the run folder
    in_place = path.parent.resolve() == trainer.files.checkpoint_dir.resolve()
    if in_place or trainer.position.best["value"] is None:
        return
    source = path.parent / BEST
    if source.is_file() and source.resolve() != path.resolve():
        best = load_resumable(str(source))
        if best["step"] <= trainer.position.step:
            trainer.files.write_checkpoint(BEST, best)
            return
    log.info("%s has no best.pt beside it: this run's best weights are judged anew.", path)
    trainer.position.best = Position().best
    trainer.position.evaluations_without_improvement = 0


def apply_optimizer_overrides(
    optimizer: torch.optim.Optimizer, settings: dict[str, Any], stored: dict[str, Any]
) -> None:
    """Set the optimizer settings that this resume changed on the restored optimizer, whose
    state (learning rate included) came from the checkpoint."""
    for name, value in settings.items():
        if name.startswith("_") or stored.get(name) == value:
            continue
        for group in optimizer.param_groups:
            group[name] = tuple(value) if isinstance(group.get(name), tuple) else value
        log.info("Resumed with optimizer.%s=%s (was %s).", name, value, stored.get(name))


def load_resumable(path: str) -> dict[str, Any]:
    """The checkpoint to continue from, with the whole training state in it."""
    checkpoint_path = find_checkpoint(path)
    checkpoint = load_checkpoint(checkpoint_path)
    check_resumable(checkpoint, checkpoint_path)
    return checkpoint


def restore(trainer: Trainer, checkpoint: dict[str, Any], path: str) -> None:
    """Put the trainer where the checkpoint left off, with this resume's optimizer settings."""
    log.info("Resuming from %s (epoch %d, step %d).", path, checkpoint["epoch"], checkpoint["step"])
    check_training_state(
        checkpoint, trainer.raw_model, trainer.optimizer, trainer.scheduler, trainer.scaler, path
    )
    try:
        trainer.load_state_dict(checkpoint)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"{path} cannot be resumed: its saved state does not fit this run ({reason[:200]})"
        ) from None
    apply_optimizer_overrides(
        trainer.optimizer, trainer.config["optimizer"], checkpoint["config"]["optimizer"]
    )
    carry_best_over(trainer, Path(path))
