"""Where the YAML configs live, and the small helpers that turn configs into plain values."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dlcourse.errors import UserError


def config_dir() -> str:
    """configs/ of a source checkout (editable install), else the copy inside an installed wheel."""
    checkout = Path(__file__).resolve().parents[2] / "configs"
    return str(checkout if checkout.is_dir() else Path(__file__).resolve().parent / "configs")


def register_resolvers() -> None:
    """Resolvers the Hydra settings use (configs/hydra/default.yaml).

    `${run_id:}`: a short random suffix, so two runs started in the same second never collide.
    `${run_dir:resume,new}`: a resumed run's own folder, else the new one.
    `${threads_per_job:jobs}`: the cores divided among jobs that run side by side (at least 1).
    """
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", resumed_run_dir)
    if not OmegaConf.has_resolver("threads_per_job"):
        OmegaConf.register_new_resolver("threads_per_job", lambda jobs: max(1, (os.cpu_count() or 1) // int(jobs)))


def resumed_run_dir(resume: str | None, new_run_dir: str) -> str:
    """The run folder of the checkpoint or folder in `resume`; `new_run_dir` when there is none.

    Under torchrun only rank 0 names the folder (and tells the others, see `train`): the other
    ranks would each pick their own timestamp, so Hydra gets a scratch folder from them instead.
    """
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:
        return str(Path(tempfile.gettempdir()) / f"dlcourse-rank{rank}-{os.getpid()}")
    if not resume or not Path(resume).exists():
        return new_run_dir  # a bad path is reported, clearly, once the run starts
    path = Path(resume).resolve()
    if path.is_dir():
        return str(path)
    return str(path.parent.parent if path.parent.name == "checkpoints" else path.parent)


def to_plain_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain dicts and lists, which `torch.load(weights_only=True)` reads."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as error:  # interpolation and missing-value errors from OmegaConf
        raise UserError(f"the config cannot be resolved: {error}") from None


def build(cfg: DictConfig, key: str, **runtime: Any) -> Any:
    """Instantiate the component under `cfg[key]` from its `_target_`, adding run-time arguments.

    Components get plain lists and dicts (`_convert_="all"`), never the config itself. A wrong
    argument in the YAML, or a `UserError` from the component, becomes one clear message.
    """
    try:
        return instantiate(cfg[key], **runtime, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        if isinstance(error.__cause__, (TypeError, ValueError)):
            raise UserError(f"cannot build {key} from its config: {error.__cause__}") from None
        raise
