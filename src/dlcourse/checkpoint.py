"""A checkpoint is one self-describing dict, written atomically and read with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dlcourse.errors import UserError

FORMAT_VERSION = 1


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        torch.save(checkpoint, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without running any pickled code (only tensors and plain containers)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the path of a .pt file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for damaged or unsafe files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"could not load checkpoint {path}: {first_line}. It may be damaged or not a dlcourse "
            f"checkpoint; use a checkpoints/*.pt file written by dlcourse-train"
        ) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise UserError(f"{path} is not a dlcourse checkpoint (it has no model and config)")
    return checkpoint
