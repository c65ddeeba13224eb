"""A config read from a file you did not write (a checkpoint's): checked as data before anything
is built from it, then as any config is (`schema.validate_config`).

    cfg = stored_config(checkpoint["config"], path)   # dlcourse-eval, -predict, resume=
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlcourse.infrastructure.config import COMPONENTS, command_line_config_dirs, config_dir
from dlcourse.infrastructure.errors import UserError
from dlcourse.infrastructure.files import read_small
from dlcourse.infrastructure.run_folder import owning_run
from dlcourse.infrastructure.schema import validate_config

# Keys through which Hydra's `instantiate` calls or configures code.
INSTANTIATE_KEYS = {"_target_", "_args_", "_partial_", "_recursive_", "_convert_"}
# Components whose module was renamed (issue #25): what a checkpoint written before calls them.
RENAMED_TARGETS = {
    "dlcourse.data.images.image_folder": "dlcourse.data.image_folder.image_folder",
    "dlcourse.data.image_folder.inpainting_folder": (
        "dlcourse.data.inpainting_folder.inpainting_folder"
    ),
}


@functools.cache
def shipped_targets() -> dict[str, frozenset[str]]:
    """Per component group, the `_target_` of every option in dlcourse's own configs/."""
    root = Path(config_dir())
    return {
        group: frozenset(
            str(OmegaConf.load(path).get("_target_")) for path in (root / group).glob("*.yaml")
        )
        for group in COMPONENTS
    }


def your_targets(config_dirs: Iterable[Path], source: str | Path) -> dict[str, set[str]]:
    """Per component group, the `_target_`s your own config folders name (--config-dir on this
    command line: trusted as the command line is), where Hydra reads them: <dir>/<group>/*.yaml,
    and a preset's `model: {_target_: ...}` in <dir>/*.yaml or <dir>/experiment/*.yaml. Read
    with a safe loader; a file that does not parse names none. A folder that holds the
    checkpoint itself (or is a run's) is no config folder: refused."""
    import yaml

    targets: dict[str, set[str]] = {group: set() for group in COMPONENTS}
    for folder in map(Path, config_dirs):
        inside = Path(os.path.abspath(source))
        if folder.resolve() in inside.resolve().parents or owning_run(folder / "x") is not None:
            refuse(source, f"--config-dir {folder} holds the checkpoint (or is a run's folder)")
        places = [folder, folder / "experiment", *(folder / group for group in COMPONENTS)]
        for path in (p for place in places if place.is_dir() for p in sorted(place.glob("*.yaml"))):
            try:
                data = yaml.safe_load(read_small(path))
            except (OSError, ValueError, RecursionError, yaml.YAMLError):
                continue
            data = data if isinstance(data, dict) else {}
            nodes = {group: data.get(group) for group in COMPONENTS}
            if path.parent.name in COMPONENTS and path.parent != folder:
                nodes[path.parent.name] = data
            for group, node in nodes.items():
                if isinstance(node, dict) and isinstance(node.get("_target_"), str):
                    targets[group].add(node["_target_"])
    return targets


def stored_config(
    config: Any, source: str | Path, config_dirs: Iterable[Path] | None = None
) -> DictConfig:
    """A config read from a file you did not write (a checkpoint's), checked before anything is
    built from it: plain data only, and code named only where dlcourse's own configs name it, or
    your own config folders that this command line gives (`config_dirs`; None: the running Hydra
    app's --config-dir, see `command_line_config_dirs`).

    Every value must be a plain number, string, list or mapping (no interpolation such as
    `${oc.env:...}`); `_target_` may appear only as a component's own (model, dataset, ...) and
    must be one that configs/<group>/ ships, or your --config-dir names; Hydra's other
    instantiation keys (`_args_`, `_partial_`, ...) never. Then the same type checks as a command
    line's config. A file that breaks any rule is refused in one line, and nothing in it has been
    run.
    """
    dirs = command_line_config_dirs() if config_dirs is None else config_dirs
    yours = your_targets(dirs, source)
    if not isinstance(config, dict):
        refuse(source, f"its config is a {type(config).__name__}, not a mapping")
    check_plain_data(config, source, "config")
    for group in COMPONENTS:
        node = config.get(group)
        if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
            refuse(source, f"its config has no {group} with a _target_")
        node["_target_"] = RENAMED_TARGETS.get(node["_target_"], node["_target_"])
        if node["_target_"] not in shipped_targets()[group] | yours[group]:
            refuse(
                source,
                f"{group}._target_={node['_target_']!r} is not a {group} that dlcourse's "
                "configs define (your own: give their folder again, --config-dir)",
            )
    for key, kind in (("trainer", dict), ("seed", int)):
        if not isinstance(config.get(key), kind):
            refuse(source, f"its config's {key} is missing or not a {kind.__name__}")
    try:
        validate_config(config)
    except UserError as error:
        refuse(source, f"its config is invalid: {error}")
    return OmegaConf.create(config)


def check_plain_data(value: Any, source: str | Path, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                refuse(source, f"{where} has a key {key!r} that is not a string")
            if key in INSTANTIATE_KEYS and not (
                key == "_target_" and where in (f"config.{g}" for g in COMPONENTS)
            ):
                refuse(source, f"{where}.{key} would make Hydra build or call {str(item)[:60]!r}")
            check_plain_data(item, source, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain_data(item, source, f"{where}[{index}]")
    elif isinstance(value, str):
        if "${" in value:
            refuse(source, f"{where}={value[:60]!r} is an interpolation, which would be resolved")
    elif value is not None and not isinstance(value, (bool, int, float)):
        refuse(source, f"{where} holds a {type(value).__name__}, not plain data")


def refuse(source: str | Path, problem: str) -> None:
    raise UserError(
        f"refused {source}: {problem}. Nothing in it was run: files you did not write are data, "
        f"and only components that dlcourse's own configs (or your --config-dir) define are "
        f"built from them"
    )


def point_at_data(dataset: DictConfig, data_dir: str | None, root: str | None) -> None:
    """Where the stored dataset config reads from: an image folder its own `root` unless another
    is given; MNIST and co. `data_dir` when given, else the checkpoint's folder, read only;
    generated data (2-D toy points) none."""
    if "root" in dataset:
        dataset.root = root or dataset.root
    elif data_dir is not None and "data_dir" in dataset:
        dataset.data_dir = data_dir
    elif "download_missing" in dataset:
        dataset.download_missing = False  # never write into a folder that only the file named
