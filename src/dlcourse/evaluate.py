"""Evaluate a saved checkpoint on the test split, with the config stored inside it.

    dlcourse-eval ckpt_path=outputs/runs/<run>/checkpoints/best.pt
    dlcourse-eval ckpt_path=best.pt output_path=results.json data_dir=/data device=cpu

Prints the metrics and writes them as JSON next to the checkpoint (best.pt → best.test.json)
or to `output_path`.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from dlcourse.checkpoint import load_checkpoint
from dlcourse.config import build, config_dir
from dlcourse.errors import exit_on_user_error
from dlcourse.evaluation import evaluate
from dlcourse.runtime import autocast_dtype, select_device


def evaluate_checkpoint(
    ckpt_path: str | Path, output_path: str | Path | None = None,
    data_dir: str | None = None, device: str = "auto",
) -> dict[str, float]:
    """Rebuild the run's dataset and model from the checkpoint, and measure the test split."""
    ckpt_path = Path(ckpt_path)
    checkpoint = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(checkpoint["config"])
    if data_dir is not None:
        cfg.dataset.data_dir = data_dir
    device = select_device(device)

    data = build(cfg, "dataset", device=device)
    model = build(cfg, "model").to(device)
    model.load_state_dict(checkpoint["model"])
    loss_fn = build(cfg, "loss")
    dtype = autocast_dtype(str(cfg.trainer.precision), device)
    metrics = evaluate(model, loss_fn, data.test, data.task, device, dtype)
    metrics = {(name if "/" in name else f"test/{name}"): value for name, value in metrics.items()}

    output_path = Path(output_path) if output_path else ckpt_path.with_suffix(".test.json")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(json.dumps(metrics, indent=2) + "\n")
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}")
    print(f"Wrote {output_path}")
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate_checkpoint(cfg.ckpt_path, cfg.output_path, cfg.data_dir, cfg.device)


if __name__ == "__main__":
    main()
