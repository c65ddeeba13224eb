"""Where the YAML configs live, the facts they share (the component groups, the trainer's
defaults, where a dataset's files lie), Hydra's resolvers and callbacks for run folders, and
`build`: a config's component instantiated from its `_target_`."""

from __future__ import annotations

import functools
import math
import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.run_folder import CHECKPOINTS, LAST, SEEDS

# Model settings that the data decides where the model's config leaves them null.
SIZES_FROM_DATA = ("in_channels", "image_size", "input_size", "num_classes")
# The groups whose `_target_` names code that `build` instantiates.
COMPONENTS = ("model", "dataset", "loss", "optimizer", "scheduler")


@functools.cache
def trainer_defaults() -> dict[str, Any]:
    """configs/trainer/default.yaml's settings: the one place the trainer's defaults are written
    (its comments say what each does); `schema.TrainerSettings` takes them as its defaults."""
    return OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "trainer" / "default.yaml"))


def config_dir() -> str:
    """configs/ of a source checkout (editable install), else the copy inside an installed wheel."""
    checkout = Path(__file__).resolve().parents[3] / "configs"
    return str(checkout if checkout.is_dir() else Path(__file__).resolve().parents[1] / "configs")


# Set by the sweep (dlcourse.sweeps.status.SweepStatus) for its jobs: the keys it varies, which name
# each job's folder (2_optimizer.lr=0.1_model=mlp).
SWEPT_KEYS = "DLCOURSE_SWEPT_KEYS"


def command_line_config_dirs() -> list[Path]:
    """The config folders the running Hydra app's command line added (--config-dir), as Hydra
    records its config sources; none outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    sources = HydraConfig.get().runtime.config_sources
    return [Path(s.path) for s in sources if s.provider == "command-line" and s.schema == "file"]


def register_resolvers() -> None:
    """Resolvers the Hydra settings use (configs/hydra/default.yaml).

    `${run_id:}`: a short random suffix, so two runs started in the same second never collide.
    `${run_name:experiment,model,overrides}`: what ran, for the run folder's name (the
    experiment, else the model), and the settings the command line changed.
    `${job_name:num,overrides}`: a sweep job's folder, its number and swept settings.
    `${run_dir:resume,new}`: a resumed run's own folder, else the new one.
    `${threads_per_job:jobs}`: the cores divided among jobs that run side by side (at least 1).
    """
    resolvers = {
        "run_id": (lambda: secrets.token_hex(3), True),
        "run_name": (run_name, False),
        "job_name": (job_name, False),
        "run_dir": (resumed_run_dir, False),
        "threads_per_job": (lambda jobs: max(1, (os.cpu_count() or 1) // int(jobs)), False),
    }
    for name, (resolver, cached) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=cached)


def run_name(experiment: str | None, model: str | None, overrides: list[str]) -> str:
    """What ran, and what its command line changed: `cnn_optimizer.lr=0.05_trainer.epochs=3`, so
    that three runs of one model tell themselves apart (in TensorBoard's run list too). Where
    its data lies, where it is logged (`logger=...`: not what ran), and the choices already in
    the name, are left out; settings that would take it past RUN_NAME_LIMIT are too
    (outputs/runs/<time>_<name>_<id> then fits 100 columns)."""
    name = str(experiment or model)
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        named = key in ("experiment", "model", "resume", "logger")
        named = named or key.startswith(("paths.", "logger."))
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # debug='nan' (as command_line quotes it): debug=nan
        setting = f"{key}={short_number(value)}"
        fits = len(name) + 1 + len(setting) <= RUN_NAME_LIMIT
        if fits and not named and key.rsplit(".", 1)[-1] not in DATA_LOCATIONS:
            name = f"{name}_{setting}"
    return safe_name(name)


RUN_NAME_LIMIT = 60  # characters of a run folder's name between its time and its id


def job_name(number: int, overrides: list[str]) -> str:
    """`<number>_<the job's swept settings>`, e.g. `2_optimizer.lr=0.1_model=mlp`."""
    swept = set(filter(None, os.environ.get(SWEPT_KEYS, "").split(",")))
    settings = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in swept:
            settings.append(f"{key}={short_number(value)}")
    return safe_name("_".join([str(number), *settings]))


def short_number(value: str) -> str:
    """A float an optimiser drew (0.0029813770307052724) to 4 significant digits; else as is."""
    try:
        return f"{float(value):.4g}" if len(value) > 8 else value
    except ValueError:
        return value


def safe_name(name: str, limit: int = 120) -> str:
    """A folder name from any text: letters, digits and . _ = , + - [ ] only, `limit` at most."""
    return re.sub(r"[^A-Za-z0-9._=,+\[\]-]", "-", name)[:limit]


def resumed_run_dir(resume: str | None, new_run_dir: str) -> str:
    """The run folder of the checkpoint or folder in `resume`; `new_run_dir` when there is none.

    Only a folder that holds a dlcourse run (checkpoints/last.pt) is ever reused: `resume=/etc`
    or `resume=<run>/metrics.json` get a new folder (and a clear refusal once the run starts), so
    a mistyped path never has files written into it. A checkpoint outside a run folder continues
    in a new one. Under torchrun only rank 0 names the folder (and tells the others, see `train`):
    the other ranks get a scratch folder that `dlcourse-train` removes at once.
    """
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:
        return str(Path(tempfile.gettempdir()) / f"{RANK_SCRATCH}{rank}-{os.getpid()}")
    folder = run_folder_of_resume(resume)
    return str(folder) if folder else new_run_dir


# The dataset settings that say where its files lie: a run's data may move (resume, dlcourse-eval).
DATA_LOCATIONS = ("data_dir", "root")


RANK_SCRATCH = "dlcourse-rank"


def is_rank_scratch(folder: Path) -> bool:
    """Whether `folder` is the scratch folder `resumed_run_dir` gave a rank other than 0 (not a
    folder the user named with hydra.run.dir, which every rank shares)."""
    return folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith(RANK_SCRATCH)


def resumes_in_place(resume: str, run_dir: Path) -> bool:
    """Whether the resumed checkpoint's own run folder is `run_dir` (True), or the checkpoint
    lies outside any run and continues in the new `run_dir` (False). Resuming one run into
    another's folder (`resume=A hydra.run.dir=B`) is refused: it would overwrite B."""
    own = run_folder_of_resume(resume)
    if own is None:
        return False
    if own.resolve() != run_dir.resolve():
        raise UserError(
            f"resume={resume} continues the run in its own folder {own}; hydra.run.dir={run_dir} "
            f"would write it into another folder. Leave hydra.run.dir out (to branch off a run, "
            f"copy its checkpoints/last.pt elsewhere and resume that file)"
        )
    return True


def run_folder_of_resume(resume: str | None) -> Path | None:
    """The dlcourse run folder that `resume` names (the folder, a checkpoint in its
    checkpoints/, or a seed group's folder), or None when it names none."""
    if not resume or resume == "auto":
        return None
    path = Path(resume).expanduser().resolve()
    if path.is_file() and path.suffix == ".pt" and path.parent.name == CHECKPOINTS:
        path = path.parent.parent
    return path if (path / CHECKPOINTS / LAST).is_file() or (path / SEEDS).is_file() else None


class CheckOutputFolder(Callback):
    """Hydra callback (configs/hydra/default.yaml): make sure the run's (or sweep's) folder can
    be created before Hydra creates it, so that `paths.output_dir=<a file>` or a name longer than
    the file system allows is one line and exit status 2, not a traceback from deep in Hydra."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_folder(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_folder(config.hydra.sweep.dir)


def check_folder(path: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        import sys

        print(
            f"error: cannot make the output folder {str(path)[:120]}: {error.strerror or error}. "
            f"Choose another paths.output_dir (or hydra.run.dir / hydra.sweep.dir)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)


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
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        # Out of memory included: a size that no machine can hold (model.hidden_sizes=[10**12]).
        if isinstance(cause, (TypeError, ValueError, OverflowError, RuntimeError, MemoryError)):
            reason = (
                str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            )
            raise UserError(f"cannot build {key} from its config: {reason}") from None
        raise


def fill_model_sizes(
    model: DictConfig, input_shape: Sequence[int], num_classes: int | None = None
) -> None:
    """Set the model settings its config leaves to the data (null) from one input's shape and the
    number of classes: `in_channels` C, `image_size` H (square images), `input_size` C·H·W,
    `num_classes`. A size the data cannot tell (classes, for a shape alone) is dropped, so the
    model's own default applies. Settings the config gives stay as they are."""
    square = len(input_shape) == 3 and input_shape[1] == input_shape[2]
    found = {
        "in_channels": input_shape[0] if len(input_shape) == 3 else None,
        "image_size": input_shape[-1] if square else None,
        "input_size": math.prod(input_shape),
        "num_classes": num_classes,
    }
    with open_dict(model):
        for name in SIZES_FROM_DATA:
            if name in model and model[name] is None:
                if found[name] is None:
                    del model[name]
                else:
                    model[name] = found[name]
