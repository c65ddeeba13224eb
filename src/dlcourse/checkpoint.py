"""A checkpoint is one self-describing dict, written atomically and read with weights_only=True.

It holds everything needed to continue a run exactly where it stopped: the model, optimizer,
scheduler and AMP scaler states, where in which epoch the run was, the partial sums of that
epoch's metrics, every random number generator's state, the best validation result, and the
resolved config as plain dicts.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path
from typing import Any

import torch

from dlcourse.errors import UserError

FORMAT_VERSION = 1
LAST, BEST = "last.pt", "best.pt"


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    `os.replace` is atomic on POSIX and Windows: a crash or kill at any moment leaves either the
    previous checkpoint or the new one, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        torch.save(checkpoint, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors and plain containers, never code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a checkpoints/*.pt file or a run folder")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if refused:  # a class or function the safe unpickler does not allow
            raise UserError(
                f"refused to load {path}: it holds a pickled object that is not plain data "
                f"({refused[0]}). Nothing in it was run. Load only checkpoints written by dlcourse-train"
            ) from None
        raise UserError(damaged_message(path, "not a PyTorch checkpoint")) from None
    except Exception as error:  # damaged bytes surface as many types: EOFError, KeyError, RuntimeError...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(damaged_message(path, reason)) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise UserError(f"{path} is not a dlcourse checkpoint (it has no model and config)")
    return checkpoint


def damaged_message(path: Path, reason: str) -> str:
    return (f"could not load checkpoint {path} ({reason}): the file is damaged, truncated or not a "
            "checkpoint. Use another checkpoints/*.pt file written by dlcourse-train")


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or a run folder's latest one (checkpoints/last.pt).

    Temporary files of an interrupted save (.last.pt.tmp) are never picked.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        candidates = [path / "checkpoints" / LAST, path / LAST]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise UserError(f"no checkpoint in run folder {path}: expected {candidates[0]}")
    if not path.is_file():
        raise UserError(f"{path} is neither a checkpoint file nor a run folder")
    return path


def run_folder_of(checkpoint_path: Path) -> Path:
    """The run folder a checkpoint belongs to (<run>/checkpoints/last.pt → <run>)."""
    parent = checkpoint_path.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def rng_states() -> dict[str, Any]:
    """Every generator a run draws from, in forms that `weights_only=True` can read back."""
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        name, keys, position, has_gauss, cached = numpy.random.get_state()
        states["numpy"] = [name, torch.from_numpy(keys.astype("int64")), position, has_gauss, cached]
    except ImportError:
        pass
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy

        name, keys, position, has_gauss, cached = states["numpy"]
        numpy.random.set_state((name, keys.numpy().astype("uint32"), position, has_gauss, cached))


def export_safetensors(model: torch.nn.Module, model_config: dict[str, Any], path: str | Path) -> None:
    """The model's weights alone, loadable anywhere without pickle; its config in the metadata."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path), metadata={"model_config": json.dumps(model_config), "format": "pt"})
