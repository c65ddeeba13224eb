"""Train a model from a Hydra config.

    dlcourse-train                                      # the defaults in configs/train.yaml
    dlcourse-train model=cnn optimizer.lr=0.05 trainer.epochs=3
    dlcourse-train experiment=cnn_mnist
    dlcourse-train -m model=linear,mlp optimizer.lr=0.01,0.1   # a sweep (Hydra multirun)
    dlcourse-train resume=outputs/runs/<run>            # continue a stopped run in its folder
    python -m dlcourse.train --help                     # the config groups and their options

The run itself is `dlcourse.run.train`; this module only wraps it for Hydra, and imports torch
only once a run starts, so that `--help` and mistyped overrides answer at once.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dlcourse.config import config_dir, register_resolvers
from dlcourse.errors import SweepError, exit_on_user_error
from dlcourse.interrupt import TrainingInterrupted
from dlcourse.sweep import record_failure

log = logging.getLogger("dlcourse.train")

register_resolvers()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    from dlcourse.run import resume_config, shortest_path, train  # torch is imported from here on

    output_dir = HydraConfig.get().runtime.output_dir
    if cfg.get("resume") == "auto":  # continue this folder's run if it has one (a requeued job)
        last = Path(output_dir) / "checkpoints" / "last.pt"
        cfg.resume = str(last) if last.is_file() else None
    if cfg.get("resume"):
        cfg = resume_config(cfg, list(HydraConfig.get().overrides.task))
    try:
        metrics = train(cfg, output_dir)
    except TrainingInterrupted as stop:
        log.warning("Stopped: %s. Resume with:\n  dlcourse-train resume=%s", stop, shortest_path(Path(output_dir)))
        sys.exit(stop.exit_code)
    except Exception as error:
        if HydraConfig.get().mode != RunMode.MULTIRUN or isinstance(error, SweepError):
            raise
        record_failure(Path(output_dir), error)  # one bad job must not end the sweep
        return None  # a sweeper such as Optuna counts the trial as failed
    # Sweepers (e.g. Optuna) maximise what the task function returns.
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
