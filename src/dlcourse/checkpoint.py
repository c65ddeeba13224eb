"""A checkpoint is one self-describing dict, written atomically and read with weights_only=True.

It holds everything needed to continue a run exactly where it stopped: the model, optimizer,
scheduler and AMP scaler states, where in which epoch the run was, the partial sums of that
epoch's metrics, every random number generator's state, the best validation result, and the
resolved config as plain dicts.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import random
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from dlcourse.config import build, stored_config
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
    try:
        with open(temporary, "wb") as file:
            writer = ErrorKeepingWriter(file)
            torch.save(checkpoint, writer)
            file.flush()
            os.fsync(file.fileno())
    except (OSError, RuntimeError) as error:
        temporary.unlink(missing_ok=True)
        cause = writer.error if isinstance(error, RuntimeError) and writer.error else error
        if getattr(cause, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
            raise
        previous = f"{path}, as it was before" if path.is_file() else "none yet"
        raise UserError(
            f"no space left on the device to write {path}; the last good checkpoint is {previous}. "
            "Free some space, then resume the run"
        ) from None
    os.replace(temporary, path)


class ErrorKeepingWriter:
    """A file for torch.save that keeps the OSError of a failed write: torch reports it only as
    "unexpected pos", and a full disk deserves to be named."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors and plain containers, never code.

    Its weights must be a mapping of finite tensors: NaN or infinite weights are refused, never
    used. Its config is checked where something is built from it (`config.stored_config`).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist; pass a checkpoints/*.pt file or a run folder"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if refused:  # a class or function the safe unpickler does not allow
            raise UserError(
                f"refused to load {path}: it holds a pickled object that is not plain data "
                f"({refused[0]}). Nothing in it was run. Load only checkpoints written by "
                f"dlcourse-train"
            ) from None
        raise UserError(damaged_message(path, "not a PyTorch checkpoint")) from None
    except MemoryError:
        raise UserError(
            damaged_message(path, "it claims more memory than this machine has")
        ) from None
    except (
        Exception
    ) as error:  # damaged bytes surface as many types: EOFError, KeyError, RuntimeError...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(damaged_message(path, reason)) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise UserError(f"{path} is not a dlcourse checkpoint (it has no model and config)")
    check_weights(checkpoint["model"], path)
    return checkpoint


def check_weights(weights: Any, path: Path) -> None:
    if not isinstance(weights, dict) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor)
        for name, tensor in weights.items()
    ):
        raise UserError(
            f"{path} is not a dlcourse checkpoint: its model is not a mapping of names to tensors"
        )
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(
                f"{path} holds NaN or infinite weights ({name}); a model with them predicts "
                "nothing meaningful. Use a checkpoint from before the loss diverged"
            )


def damaged_message(path: Path, reason: str) -> str:
    return (
        f"could not load checkpoint {path} ({reason}): the file is damaged, truncated or not a "
        "checkpoint. Use another checkpoints/*.pt file written by dlcourse-train"
    )


@dataclass
class Position:
    """Where a run is. With the states of the model, optimizer, scheduler, loss scaler and random
    generators, and the epoch's partial metric sums, what a checkpoint needs to continue there."""

    epoch: int = 1  # the epoch to run next, or the one in progress
    batch_in_epoch: int = 0  # batches of it already done
    step: int = 0  # optimizer steps so far
    nonfinite_steps: int = 0  # steps skipped for a nan / inf loss (trainer.on_nonfinite=skip)
    train_seconds: float = 0.0  # training time so far
    evaluations_without_improvement: int = 0  # for early stopping (trainer.early_stopping)
    history: list[dict[str, float]] = field(default_factory=list)  # each epoch's metrics
    best: dict[str, Any] = field(default_factory=lambda: {"value": None, "epoch": 0, "metrics": {}})


# The types of the position's fields (a float may have been saved as an int).
POSITION_TYPES: dict[str, type | tuple[type, ...]] = {
    name: (int, float) if hint is float else typing.get_origin(hint) or hint
    for name, hint in typing.get_type_hints(Position).items()
}
# Those a checkpoint may lack: written by later versions, they start from their defaults.
ADDED_LATER = ("evaluations_without_improvement", "history")
# What a checkpoint must hold, and of which type, to continue training from it.
RESUME_FIELDS: dict[str, type | tuple[type, ...]] = {
    **{name: kind for name, kind in POSITION_TYPES.items() if name not in ADDED_LATER},
    "epoch_count": int,
    "epoch_sums": dict,
    "optimizer": dict,
    "scheduler": dict,
    "scaler": dict,
    "rng": dict,
}


def check_resumable(checkpoint: dict[str, Any], path: Path) -> None:
    """Refuse, in one line, a checkpoint that lacks part of the training state."""
    for name, kind in RESUME_FIELDS.items():
        value = checkpoint.get(name)
        if (
            not isinstance(value, kind)
            or isinstance(value, bool)
            or (isinstance(value, int) and value < 0)
        ):
            raise UserError(
                f"{path} cannot be resumed: its {name!r} is missing or not what dlcourse-train "
                "writes. Resume from a checkpoints/last.pt written by dlcourse-train"
            )
    if checkpoint["epoch"] < 1:
        raise UserError(f"{path} cannot be resumed: its epoch is {checkpoint['epoch']}")
    for name in ADDED_LATER:
        if name in checkpoint and not isinstance(checkpoint[name], POSITION_TYPES[name]):
            raise UserError(
                f"{path} cannot be resumed: its {name!r} is not what dlcourse-train writes"
            )


def find_checkpoint(path: str | Path, prefer: str = LAST) -> Path:
    """A checkpoint file as given, or a run folder's checkpoint: `prefer` (last.pt to resume,
    best.pt to evaluate or predict), else the other one.

    Temporary files of an interrupted save (.last.pt.tmp) are never picked.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        names = (prefer, BEST if prefer == LAST else LAST)
        candidates = [folder / name for name in names for folder in (path / "checkpoints", path)]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise UserError(f"no checkpoint in run folder {path}: expected {candidates[0]}")
    if not path.is_file():
        raise UserError(f"{path} is neither a checkpoint file nor a run folder")
    return path


TASKS = ("classification", "inpainting")


def open_checkpoint(
    path: str | Path, prefer: str = BEST
) -> tuple[Path, dict[str, Any], DictConfig]:
    """A checkpoint file, or a run folder's `prefer` checkpoint, loaded and checked for use:
    its weights (`load_checkpoint`), its config (`stored_config`), its task and input shape."""
    checkpoint_path = find_checkpoint(path, prefer)
    checkpoint = load_checkpoint(checkpoint_path)
    cfg = stored_config(checkpoint["config"], checkpoint_path)
    if checkpoint.get("task", "classification") not in TASKS:
        raise UserError(
            f"{checkpoint_path} names task {checkpoint.get('task')!r}; dlcourse knows "
            f"{', '.join(TASKS)}"
        )
    shape = checkpoint.get("input_shape")
    if not (
        isinstance(shape, list)
        and 1 <= len(shape) <= 3
        and all(type(n) is int and 1 <= n <= 16384 for n in shape)
    ):
        raise UserError(
            f"{checkpoint_path} has no valid input_shape (one input's [C, H, W], or [2] for "
            "points); use a checkpoint written by dlcourse-train"
        )
    check_description(checkpoint, checkpoint_path)
    return checkpoint_path, checkpoint, cfg


def check_description(checkpoint: dict[str, Any], path: Path) -> None:
    """The class names and input preprocessing a checkpoint states (used by dlcourse-predict)
    must be plain and sensible; absent, they mean MNIST (older checkpoints)."""
    names = checkpoint.get("class_names")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) and len(n) <= 200 for n in names)
    ):
        raise UserError(f"{path} has class_names that are not a list of names")
    steps = checkpoint.get("preprocessing")
    if steps is None or steps == {}:  # none stated: MNIST (classifiers), or not needed
        return
    if steps == {"kind": "points"}:  # 2-D toy points: taken as they are
        return
    if not (
        isinstance(steps, dict)
        and steps.get("kind") in ("digit", "fashion", "image")
        and all(finite_numbers(steps.get(name)) for name in ("mean", "std"))
        and min(steps["std"]) > 0
        and (steps["kind"] != "image" or image_steps_fit(steps))
    ):
        raise UserError(f"{path} has a preprocessing entry that dlcourse-train does not write")


def finite_numbers(values: Any) -> bool:
    """One to three finite numbers (one per channel)."""
    return (
        isinstance(values, list)
        and 1 <= len(values) <= 3
        and all(type(v) in (int, float) and math.isfinite(v) for v in values)
    )


def image_steps_fit(steps: dict[str, Any]) -> bool:
    channels, size = steps.get("channels"), steps.get("image_size")
    return (
        channels in (1, 3)
        and type(size) is int
        and 1 <= size <= 4096
        and len(steps["mean"]) == len(steps["std"]) == channels
    )


def model_from_checkpoint(checkpoint: dict[str, Any], cfg: DictConfig, path: Path) -> nn.Module:
    """The checkpoint's model, built from its (checked) config, with its weights.

    It is built on the meta device first, which allocates nothing: a config whose layers do not
    match the stored weights (another model's weights, or sizes no machine could hold) is refused
    before any memory is spent on it.
    """
    with torch.device("meta"):
        skeleton = build(cfg, "model").state_dict()
    stored = checkpoint["model"]
    different = sorted(set(skeleton).symmetric_difference(stored)) + [
        name
        for name in skeleton  # an empty tensor is sized by what is loaded (nearest neighbours)
        if name in stored and skeleton[name].numel() and skeleton[name].shape != stored[name].shape
    ]
    if different:
        raise UserError(
            f"{path} holds weights that do not fit the model its config describes "
            f"({cfg.model._target_}; first difference: {different[0]})"
        )
    model = build(cfg, "model")
    model.load_state_dict(checkpoint["model"])
    return model


def rng_states() -> dict[str, Any]:
    """Every generator a run draws from, in forms that `weights_only=True` can read back."""
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        name, keys, position, has_gauss, cached = numpy.random.get_state()
        states["numpy"] = [
            name,
            torch.from_numpy(keys.astype("int64")),
            position,
            has_gauss,
            cached,
        ]
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


def export_safetensors(
    model: torch.nn.Module, model_config: dict[str, Any], path: str | Path
) -> None:
    """The model's weights alone, loadable anywhere without pickle; its config in the metadata."""
    from safetensors.torch import save_file

    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    save_file(state, str(path), metadata={"model_config": json.dumps(model_config), "format": "pt"})
