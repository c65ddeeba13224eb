"""Evaluate a saved checkpoint on the test split, with the config stored inside it.

    dlcourse-eval ckpt_path=outputs/runs/<run>             # the run's best.pt (else last.pt)
    dlcourse-eval ckpt_path=outputs/runs/<run>/checkpoints/best.pt
    dlcourse-eval ckpt_path=best.pt output_path=results.json data_dir=/data device=cpu
    dlcourse-eval ckpt_path=outputs/runs/<run> root=my_photos   # an image-folder run, moved data

Prints the metrics and writes them as JSON next to the checkpoint (best.pt → best.test.json)
or to `output_path`. The data folder is `data_dir`, else $DLCOURSE_DATA_DIR, else the one the
checkpoint names (read only: nothing is downloaded into a folder that only a file chose); an
image-folder run reads `root`, else the folder it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from dlcourse.data.image_layout import check_folder_classes
from dlcourse.infrastructure.checkpoint import model_from_checkpoint, open_checkpoint
from dlcourse.infrastructure.config import DATA_LOCATIONS, build, config_dir
from dlcourse.infrastructure.errors import UserError, exit_on_user_error, printable
from dlcourse.infrastructure.files import write_file
from dlcourse.infrastructure.run_folder import BEST, check_output, owning_run
from dlcourse.infrastructure.runtime import autocast_dtype, select_device
from dlcourse.infrastructure.stored_config import point_at_data
from dlcourse.metrics import measure


def evaluate_checkpoint(
    ckpt_path: str | Path,
    output_path: str | Path | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    root: str | None = None,
) -> dict[str, float]:
    """Rebuild the run's dataset and model from the checkpoint (a file, or a run folder's best.pt),
    and measure the test split."""
    ckpt_path, checkpoint, cfg = open_checkpoint(ckpt_path, prefer=BEST)
    own_run = owning_run(ckpt_path)
    point_at_data(cfg.dataset, data_dir, root)
    check_folder_classes(checkpoint, cfg.dataset, ckpt_path)  # a renamed class would score 0
    data_folders = [Path(cfg.dataset[k]) for k in DATA_LOCATIONS if cfg.dataset.get(k)]
    if output_path:
        output_path = Path(output_path)
        check_output(output_path, [ckpt_path, *data_folders], own_run, "output_path")
    else:
        output_path = ckpt_path.with_suffix(".test.json")
    device = select_device(device)

    data = build(cfg, "dataset", device=device)
    model = model_from_checkpoint(checkpoint, cfg, ckpt_path).to(device)
    loss_fn = build(cfg, "loss")
    dtype = autocast_dtype(str(cfg.trainer.get("precision", "32")), device)  # default if absent
    try:
        metrics, baselines = measure(model, loss_fn, data.test, data.task, "test", device, dtype)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        reason = str(error).splitlines()[0][:200]
        raise UserError(
            f"the model in {ckpt_path} cannot take its dataset's batches: {reason}"
        ) from None
    metrics |= baselines

    write_file(output_path, json.dumps(metrics, indent=2) + "\n", root=own_run)
    for name, value in metrics.items():
        print(f"{printable(name)}: {value:.4f}")
    print(f"Wrote {output_path}")
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise UserError(
            "dlcourse-eval needs a checkpoint: dlcourse-eval ckpt_path=outputs/runs/<run> (or a "
            ".pt file)"
        )
    evaluate_checkpoint(cfg.ckpt_path, cfg.output_path, cfg.data_dir, cfg.device, cfg.root)


if __name__ == "__main__":
    main()
