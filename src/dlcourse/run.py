"""One training run, built from a composed config: `train(cfg, output_dir)`.

    from dlcourse.run import train
    metrics = train(cfg, Path("outputs/runs/my_run"))  # cfg: configs/train.yaml, by Hydra

`dlcourse-train` (dlcourse/commands/train.py) is the thin Hydra wrapper around it; tests call
`train` with a composed config and a tmp_path. `checkpoint`: the one `cfg.resume` names, when the
caller has loaded it already; `hparams`: what TensorBoard's HParams tab shows (default: the
core settings; dlcourse-train passes the command line's); `trial`: the Optuna trial the run
reports to in a search (dlcourse/sweeps/search.py); `folder`: dlcourse-train's claim of the run
folder (infrastructure/run_folder.py), entered once the config is checked, so that a refused
config leaves nothing behind.

Reading order: `train` below, then the loop in trainer.py (`Trainer.fit` → `train_one_epoch` →
`train_step`), then the model's file.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from dlcourse.data.batches import DataSplits
from dlcourse.infrastructure import distributed
from dlcourse.infrastructure.config import build, fill_model_sizes, to_plain_dict
from dlcourse.infrastructure.distributed import unwrap
from dlcourse.infrastructure.errors import SweepError, UserError
from dlcourse.infrastructure.interrupt import StopSignal
from dlcourse.infrastructure.logger_choice import build_loggers
from dlcourse.infrastructure.loggers import Logger, NullLogger, run_hparams
from dlcourse.infrastructure.run_files import NullRunFiles, RunFiles
from dlcourse.infrastructure.run_folder import shortest_path
from dlcourse.infrastructure.runtime import (
    autocast_dtype,
    configure_determinism,
    seed_everything,
    select_device,
    startup_objects_frozen,
)
from dlcourse.infrastructure.schema import TrainerSettings, validate_config
from dlcourse.resume import load_resumable, restore
from dlcourse.schedulers import Scheduler
from dlcourse.tasks import Task
from dlcourse.trainer import NeverPrune, Pruning, Trainer

log = logging.getLogger(__name__)


def train(
    cfg: DictConfig,
    output_dir: Path,
    checkpoint: dict | None = None,
    hparams: dict | None = None,
    trial: Pruning = NeverPrune(),
    folder: AbstractContextManager = nullcontext(),
) -> dict:
    """Data → model → loss → optimizer → scheduler → logger → trainer; fit; write the results."""
    config = to_plain_dict(cfg)
    validate_config(config)  # the one check of the run's config: before anything is written
    with folder:  # dlcourse-train's RunFolder: the run folder claimed, its record written
        settings = TrainerSettings(**config["trainer"])
        processes, device = setup_runtime(settings, cfg.seed)
        output_dir = Path(processes.broadcast(str(output_dir)))  # all ranks share rank 0's
        if cfg.get("resume") and checkpoint is None:
            checkpoint = load_resumable(cfg.resume)
        data, model, loss_fn, config = build_components(cfg, device, processes)
        model, optimizer, scheduler = prepare_training(
            cfg, model, len(data.train), settings, processes, device, checkpoint is not None
        )
        logger, files = run_outputs(config, output_dir, processes, checkpoint)
        announce(cfg, data, unwrap(model), settings, device, output_dir, hparams or {})
        logger.log_train_and_val(["loss", data.task.monitor])
        with startup_objects_frozen(), StopSignal() as stop_signal:
            # fmt: off
            trainer = Trainer(model, loss_fn, optimizer, scheduler, data, logger, settings,
                              device, files=files, config=config, stop_signal=stop_signal,
                              processes=processes, trial=trial)
            # fmt: on
            if checkpoint:
                restore(trainer, checkpoint, cfg.resume)
            try:
                metrics = trainer.fit()
                final = hparams_metrics(metrics, data.task.monitor)
                logger.log_hparams(hparams or run_hparams(config), final, metrics.get("steps", 0))
            finally:
                logger.close()
                processes.close()
        files.write_results(metrics, unwrap(model), config["model"])
        logger.log_files(output_dir)  # MLflow's artifacts: the pictures and weights just written
        if not settings.keep_checkpoints:  # debug=fast: the results kept, the checkpoints not
            files.remove_checkpoints()
        log.info("Run folder: %s", output_dir)
        # It opens on the curves: train and val of each metric in one chart.
        log.info("Look at it with: tensorboard --logdir %s", shortest_path(output_dir.parent))
    return metrics


def hparams_metrics(metrics: dict, monitor: str) -> dict[str, float]:
    """The few final metrics the HParams tab shows of a run, named so that TensorBoard's sorted
    columns put the monitored metric first: its best epoch's validation value
    (`results/best/val/acc`, the one that picked the checkpoint), its test value, the test loss
    and the last epoch's training loss. All under `results/`: in the Time Series tab they are a
    group of their own, after the curves (see loggers.placement)."""
    names = {
        f"best/val/{monitor}": f"val/{monitor}",
        f"test/{monitor}": f"test/{monitor}",
        "test/loss": "test/loss",
        "last/train/loss": "train/loss",
    }
    return {
        f"{RESULTS}/{tag}": metrics[key]
        for tag, key in names.items()
        if isinstance(metrics.get(key), float)
    }


RESULTS = "results"  # the first word of the HParams tab's metrics


def announce(
    cfg: DictConfig,
    data: DataSplits,
    model: torch.nn.Module,
    settings: TrainerSettings,
    device: torch.device,
    output_dir: Path,
    hparams: dict,
) -> None:
    """Say, before the first step, what is trained on what, how, and where its folder is."""
    experiment = hparams.get("experiment")
    what = f"experiment={experiment}: " if experiment else ""
    parameters = sum(p.numel() for p in model.parameters())
    dataset = str(cfg.dataset._target_).rsplit(".", 1)[-1]
    batches = settings.train_batches(len(data.train))
    size = f" of {cfg.dataset.batch_size}" if "batch_size" in cfg.dataset else ""
    log.info(
        "Training %s%s, %s parameters, on %s (%d batches%s an epoch)",
        what, type(model).__name__, f"{parameters:,}", dataset, batches, size,
    )  # fmt: skip
    log.info(
        "for %d epoch(s) on %s, precision %s; run folder: %s",
        settings.epochs, device, settings.precision, shortest_path(output_dir),
    )  # fmt: skip


def build_components(
    cfg: DictConfig, device: torch.device, processes: distributed.SingleProcess
) -> tuple[DataSplits, torch.nn.Module, torch.nn.Module, dict]:
    """The data (this rank's shard), the model on its device and the loss, checked to fit each
    other; and the config as plain data, with what the data decided written into it."""
    data = build(cfg, "dataset", device=device)
    config = fill_from_data(cfg, data)
    data.shard(processes.rank, processes.world_size)
    model = build(cfg, "model").to(device)
    loss_fn = build(cfg, "loss")
    metric_names = check_model_fits(model, loss_fn, data.task, next(iter(data.val)), device)
    check_optimized_metric(cfg.get("optimized_metric"), metric_names)
    return data, model, loss_fn, config


def fill_from_data(cfg: DictConfig, data: DataSplits) -> dict:
    """Write what the data decided into the config: the model sizes it leaves null (input shape,
    classes) and the dataset settings found in the data (an image folder's normalisation). The
    run's checkpoints then describe it whole, and a resume or dlcourse-eval rebuilds the same.
    Returns the config as plain data."""
    class_names = getattr(data.task, "class_names", None)
    fill_model_sizes(cfg.model, data.input_shape, len(class_names) if class_names else None)
    with open_dict(cfg.dataset):
        cfg.dataset.update(data.found)
    return to_plain_dict(cfg)


def run_outputs(
    config: dict, output_dir: Path, processes: distributed.SingleProcess, checkpoint: dict | None
) -> tuple[Logger, RunFiles]:
    """The loggers the config chose (TensorBoard by default) and the run's files. Rank 0 writes
    them; other ranks get the no-op twins. On resume, the loggers drop whatever the stopped run
    logged after its checkpoint."""
    if not processes.is_main:
        return NullLogger(), NullRunFiles(output_dir)
    purge_step = checkpoint["step"] + 1 if checkpoint else None
    output_root = Path(config.get("paths", {}).get("output_dir") or "outputs")
    logger = build_loggers(config.get("logger"), output_dir, output_root, purge_step)
    return logger, RunFiles(output_dir)


def prepare_training(
    cfg: DictConfig,
    model: torch.nn.Module,
    batches_per_epoch: int,
    settings: TrainerSettings,
    processes: distributed.SingleProcess,
    device: torch.device,
    resuming: bool,
) -> tuple[torch.nn.Module, torch.optim.Optimizer | None, Scheduler | None]:
    """The model made ready to train, with its optimizer and scheduler. A model without trainable
    parameters is a classical method, fitted in one pass: it gets neither (and no resume)."""
    if not any(p.requires_grad for p in model.parameters()):
        name = type(model).__name__
        if processes.world_size > 1:
            raise UserError(
                f"{name} learns without gradients and runs in one process: start it without "
                f"torchrun"
            )
        if resuming:
            raise UserError(
                f"{name} is fitted in one pass, so there is nothing to resume: run it again "
                f"without resume="
            )
        return model, None, None
    model = prepare_model(model, settings, processes, device)
    return (model, *build_optimization(cfg, model, batches_per_epoch, settings))


def prepare_model(
    model: torch.nn.Module,
    settings: TrainerSettings,
    processes: distributed.SingleProcess,
    device: torch.device,
) -> torch.nn.Module:
    """DistributedDataParallel under torchrun, then the memory layout and compilation switches."""
    model = processes.wrap(model, device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if settings.compile:
        model = torch.compile(model)
    return model


def build_optimization(
    cfg: DictConfig, model: torch.nn.Module, batches_per_epoch: int, settings: TrainerSettings
) -> tuple[torch.optim.Optimizer, Scheduler]:
    """The optimizer over the model's parameters, and a scheduler that knows the run's length."""
    optimizer = build(cfg, "optimizer", params=model.parameters())
    steps_per_epoch = settings.train_batches(batches_per_epoch)
    scheduler = build(
        cfg,
        "scheduler",
        optimizer=optimizer,
        total_steps=steps_per_epoch * settings.epochs,
        steps_per_epoch=steps_per_epoch,
    )
    return optimizer, scheduler


def setup_runtime(
    settings: TrainerSettings, seed: int
) -> tuple[distributed.SingleProcess, torch.device]:
    """Threads, this process's place among torchrun's (if any), seeds, determinism, device (and
    that it has the precision asked for)."""
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    processes = distributed.setup(settings.device)
    seed_everything(seed)
    configure_determinism(settings.deterministic)
    device = select_device(settings.device, processes.local_rank)
    autocast_dtype(settings.precision, device)  # refuse, now, a precision this device lacks
    return processes, device


def check_model_fits(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    task: Task,
    batch: tuple[torch.Tensor, ...],
    device: torch.device,
) -> list[str]:
    """Fail before training, in one sentence, when the model or loss cannot take the dataset's
    batches; return the names of the metrics the run will report (val/acc, test/mse_hole, ...)."""
    inputs, targets, *context = (t[:2].to(device) for t in batch)
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(inputs, *context)
            loss_fn(outputs, targets, *context)
            names = ["loss", *task.batch_sums(outputs, targets, *context)]
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        raise UserError(
            f"{type(model).__name__} with {type(loss_fn).__name__} cannot take this dataset's "
            f"batches (inputs of shape {tuple(inputs.shape[1:])}): {str(error).splitlines()[0]}. "
            "Pick a model and loss made for this dataset (e.g. model=cnn loss=cross_entropy for "
            "MNIST; dataset=inpainting model=conv_inpaint loss=pixel_mse, or "
            "experiment=conv_inpainting, for inpainting)"
        ) from None
    finally:
        model.train()
    return [f"{split}/{name}" for split in ("train", "val", "test") for name in names]


def check_optimized_metric(wanted: Any, available: list[str]) -> None:
    """A sweeper optimises `optimized_metric` (a list: several objectives): refuse a name the
    run will not report."""
    names = [wanted] if isinstance(wanted, str) or wanted is None else list(wanted)
    for name in names:
        if name and name not in available:
            raise SweepError(
                f"optimized_metric={name!r} is not a metric of this run; choose one of: "
                f"{', '.join(available)}"
            )
