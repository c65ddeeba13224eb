"""An Optuna search space from Hydra's sweep syntax (`hydra.sweeper.params` and the command
line): `choice(...)`, `range(...)`, `interval(...)`, `tag(log, interval(...))`, each mapped as
Hydra's official optuna sweeper maps it, and the grid sampler's points. Used by the sweeper,
src/hydra_plugins/dlcourse_optuna_sweeper.py; Optuna is imported only when a search runs.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer

from dlcourse.infrastructure.errors import SweepError

log = logging.getLogger(__name__)


def search_space(params: dict[str, str], arguments: list[str]) -> tuple[dict, list[str]]:
    """Optuna distributions for the swept keys; the other overrides, passed to every job."""
    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    space, fixed = {}, {}
    for override in parser.parse_overrides(lines):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed[override.get_key_element()] = override.input_line or override.get_key_element()
    # The command line fixes a searched key (e.g. dataset.batch_size=32): then it is not searched.
    space = {key: value for key, value in space.items() if key not in fixed}
    return space, list(fixed.values())


def distribution(override: Override) -> Any:
    """An Optuna distribution from one Hydra sweep, as the official sweeper makes it: choice →
    categorical, range → int or float steps, interval → uniform (log-uniform when tagged
    `log`)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if override.is_range_sweep():
        # Its stop included, as the official sweeper maps it (Hydra's basic sweeper, which
        # lists the values, leaves it out, as Python's range does).
        numbers = (value.start, value.stop, value.step)
        if any(isinstance(n, float) for n in numbers):
            return FloatDistribution(float(value.start), float(value.stop), step=float(value.step))
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise SweepError(f"{override.input_line}: Optuna cannot search this kind of sweep")


def grid(space: dict) -> dict[str, list]:
    """GridSampler's search space: every searched key must be a choice or a range. A range's
    points are the ones the other samplers draw from, its stop included (the official sweeper's
    grid leaves the stop out: said once, when a grid has a range)."""
    from optuna.distributions import CategoricalDistribution

    points = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            points[key] = list(dist.choices)
        elif getattr(dist, "step", None):
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            points[key] = [dist.low + i * dist.step for i in range(count)]
            log.warning(
                "%s: the grid holds %s, its stop included as the other samplers draw it (the "
                "official sweeper's grid leaves the stop out)",
                key,
                points[key],
            )
        else:
            raise SweepError(
                f"hydra/sweeper/sampler=grid needs choice(...) or range(...) for {key}, not an "
                "interval; use another sampler, or give the values"
            )
    return points
