"""A checkpoint is one self-describing dict, written atomically and read with weights_only=True.

It holds everything needed to continue a run exactly where it stopped: the model, optimizer,
scheduler and AMP scaler states, where in which epoch the run was, the partial sums of that
epoch's metrics, every random number generator's state, the best validation result, and the
resolved config as plain dicts. What each part must be before it is used is checked in
`tensor_checks` (every tensor in the file) and `training_state` (what resume= continues from).
"""

from __future__ import annotations

import errno
import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from dlcourse.infrastructure.config import build
from dlcourse.infrastructure.errors import TrainingInterrupted, UserError
from dlcourse.infrastructure.files import open_new, write_file
from dlcourse.infrastructure.run_folder import BEST, CHECKPOINTS, LAST, group_seeds, member_folder
from dlcourse.infrastructure.stored_config import stored_config
from dlcourse.infrastructure.tensor_checks import check_tensors, check_weights, weights_misfit

FORMAT_VERSION = 1


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write to a new temporary file beside `path`, flush it to disk, then rename it over `path`
    (dlcourse.infrastructure.files.open_new: never through a link a folder was handed with).

    `os.replace` is atomic on POSIX and Windows: a crash or kill at any moment leaves either the
    previous checkpoint or the new one, never half a file.
    """
    path = Path(path)
    writer = None
    try:
        with open_new(path, root=path.parent.parent) as file:
            writer = ErrorKeepingWriter(file)
            torch.save(checkpoint, writer)
    except (OSError, RuntimeError) as error:
        cause = (
            writer.error if isinstance(error, RuntimeError) and writer and writer.error else error
        )
        if getattr(cause, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
            raise
        previous = f"{path}, as it was before" if path.is_file() else "none yet"
        raise UserError(
            f"no space left on the device to write {path}; the last good checkpoint is {previous}. "
            "Free some space, then resume the run"
        ) from None


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
    used. Its config is checked where something is built from it (`stored_config`).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist; pass a checkpoints/*.pt file or a run folder"
        )
    try:
        with warnings.catch_warnings():  # about what the file holds (sparse tensors): judged below
            warnings.simplefilter("ignore")
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
    except TrainingInterrupted:  # a stop signal while reading (the final test's best.pt)
        raise
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
    check_tensors(checkpoint, path)
    check_weights(checkpoint["model"], path)
    return checkpoint


def damaged_message(path: Path, reason: str) -> str:
    return (
        f"could not load checkpoint {path} ({reason}): the file is damaged, truncated or not a "
        "checkpoint. Use another checkpoints/*.pt file written by dlcourse-train"
    )


def find_checkpoint(path: str | Path, prefer: str = LAST) -> Path:
    """A checkpoint file as given, or a run folder's checkpoint: `prefer` (last.pt to resume,
    best.pt to evaluate or predict), else the other one.

    Temporary files of an interrupted save (.last.pt.tmp) are never picked.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        names = (prefer, BEST if prefer == LAST else LAST)
        candidates = [folder / name for name in names for folder in (path / CHECKPOINTS, path)]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        seeds = group_seeds(path)
        if seeds:
            raise UserError(
                f"{path} is a seed group (one run per seed): pass one of its runs, e.g. "
                f"{member_folder(path, seeds[0])}, or compare groups with dlcourse-compare"
            )
        raise UserError(f"no checkpoint in run folder {path}: expected {candidates[0]}")
    if not path.is_file():
        raise UserError(f"{path} is neither a checkpoint file nor a run folder")
    return path


# How a new input becomes the model's input, as a checkpoint's `preprocessing` states it: each
# dataset writes its kind, dlcourse-predict reads it, and only these are accepted from a file.
class Preprocessing:
    DIGIT, FASHION, IMAGE, POINTS = "digit", "fashion", "image", "points"  # plain strings


# The longest class name: the longest folder name file systems allow (255 bytes, so at most 255
# characters). Training refuses longer ones and checkpoints take names up to it, so that eval and
# predict always accept the checkpoints of a run that trained.
MAX_CLASS_NAME = 255  # characters in a class name (a class folder's, or a checkpoint's)
TASKS = ("classification", "inpainting")


def open_checkpoint(
    path: str | Path, prefer: str = BEST, config_dirs: list[Path] | None = None
) -> tuple[Path, dict[str, Any], DictConfig]:
    """A checkpoint file, or a run folder's `prefer` checkpoint, loaded and checked for use:
    its weights (`load_checkpoint`), its config (`stored_config`, trusting your `config_dirs`),
    its task and input shape."""
    checkpoint_path = find_checkpoint(path, prefer)
    checkpoint = load_checkpoint(checkpoint_path)
    cfg = stored_config(checkpoint["config"], checkpoint_path, config_dirs)
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
        isinstance(names, list)
        and all(isinstance(n, str) and len(n) <= MAX_CLASS_NAME for n in names)
    ):
        raise UserError(f"{path} has class_names that are not a list of names")
    steps = checkpoint.get("preprocessing")
    if steps is None or steps == {}:  # none stated: MNIST (classifiers), or not needed
        return
    if steps == {"kind": Preprocessing.POINTS}:  # 2-D toy points: taken as they are
        return
    if not (
        isinstance(steps, dict)
        and steps.get("kind") in (Preprocessing.DIGIT, Preprocessing.FASHION, Preprocessing.IMAGE)
        and all(finite_numbers(steps.get(name)) for name in ("mean", "std"))
        and min(steps["std"]) > 0
        and (steps["kind"] != Preprocessing.IMAGE or image_steps_fit(steps))
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
    different = weights_misfit(skeleton, checkpoint["model"])
    if different:
        raise UserError(
            f"{path} holds weights that do not fit the model its config describes "
            f"({cfg.model._target_}; first difference: {different})"
        )
    model = build(cfg, "model")
    model.load_state_dict(checkpoint["model"])
    return model


def export_safetensors(
    model: torch.nn.Module, model_config: dict[str, Any], path: str | Path
) -> None:
    """The model's weights alone, loadable anywhere without pickle; its config in the metadata."""
    from safetensors.torch import save

    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    metadata = {"model_config": json.dumps(model_config), "format": "pt"}
    path = Path(path)
    write_file(path, save(state, metadata=metadata), root=path.parent)


def own_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with each tensor that is a view into a larger one (a batched member's weights:
    dlcourse/sweeps/members.py) copied out, because torch.save writes a view's whole storage."""
    return {name: copied_out(tensor) for name, tensor in state.items()}


def copied_out(value: Any) -> Any:
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
        return value  # (a module's extra state, a sparse tensor: never a member's view)
    return value.clone() if value.untyped_storage().nbytes() > value.nbytes else value
