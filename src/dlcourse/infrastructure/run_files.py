"""What a run writes into its folder besides TensorBoard's events: its checkpoints, its pictures,
metrics.json and model.safetensors (with a no-op twin for the ranks of a distributed run other
than 0, which share rank 0's folder)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcourse.infrastructure.checkpoint import export_safetensors, save_checkpoint
from dlcourse.infrastructure.files import Picture, as_picture, open_new, write_file
from dlcourse.infrastructure.run_folder import BEST, CHECKPOINTS, LAST, METRICS, WEIGHTS


class RunFiles:
    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / CHECKPOINTS

    def write_checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        save_checkpoint(checkpoint, self.checkpoint_dir / name)

    def save_image(self, name: str, image: torch.Tensor | Picture) -> None:
        with open_new(self.output_dir / f"{name}.png", root=self.output_dir) as file:
            file.write(as_picture(image).png)

    def write_results(
        self, metrics: dict[str, float], model: nn.Module, model_config: dict[str, Any]
    ) -> None:
        """metrics.json, and the weights as model.safetensors (no pickle; config in metadata)."""
        export_safetensors(model, model_config, self.output_dir / WEIGHTS)
        write_file(self.output_dir / METRICS, json.dumps(metrics, indent=2) + "\n")

    def remove_checkpoints(self) -> None:
        """checkpoints/, once the run is done with it (trainer.keep_checkpoints=false: debug=fast).
        Only what the run wrote there: a link planted in its place is left alone."""
        if self.checkpoint_dir.is_dir() and not self.checkpoint_dir.is_symlink():
            for name in (LAST, BEST):
                (self.checkpoint_dir / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # anything else in it: the folder stays
                self.checkpoint_dir.rmdir()


class NullRunFiles(RunFiles):
    """Writes nothing (ranks other than 0 share rank 0's folder but leave it to rank 0)."""

    def remove_checkpoints(self) -> None:
        pass

    def write_checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        pass

    def save_image(self, name: str, image: torch.Tensor | Picture) -> None:
        pass

    def write_results(
        self, metrics: dict[str, float], model: nn.Module, model_config: dict[str, Any]
    ) -> None:
        pass
