"""What a run writes into its folder besides TensorBoard events, with a no-op twin for the
processes of a distributed run other than rank 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcourse.checkpoint import export_safetensors, save_checkpoint
from dlcourse.pictures import save_png


class RunFiles:
    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"

    def save_checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        save_checkpoint(checkpoint, self.checkpoint_dir / name)

    def save_image(self, name: str, image: torch.Tensor) -> None:
        save_png(image, self.output_dir / f"{name}.png")

    def write_results(self, metrics: dict[str, float], model: nn.Module, model_config: dict[str, Any]) -> None:
        """metrics.json, and the weights as model.safetensors (no pickle; config in the metadata)."""
        export_safetensors(model, model_config, self.output_dir / "model.safetensors")
        (self.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


class NullRunFiles(RunFiles):
    """Writes nothing (ranks other than 0 share rank 0's folder but leave it to rank 0)."""

    def save_checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        pass

    def save_image(self, name: str, image: torch.Tensor) -> None:
        pass

    def write_results(self, metrics: dict[str, float], model: nn.Module, model_config: dict[str, Any]) -> None:
        pass
