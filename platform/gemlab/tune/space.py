"""Search spaces, expanded into an explicit list of trials before Tune sees them.

A space maps config keys to a list of values or a distribution:

    space:
      router.balance_weight: [0.0, 0.01, 0.1]          # values (a grid axis, or a uniform choice)
      trainer.lr: {loguniform: [1.0e-4, 1.0e-2]}
      router.k: {randint: [1, 2]}                      # both ends included
      trainer.weight_decay: {uniform: [0.0, 0.1]}

* ``grid`` -- every combination of the value lists (distributions are refused).
* ``random`` -- ``num_samples`` draws from one stream seeded by (seed, trial).
* ``domainbed`` -- ``num_samples`` draws where each key has its own stream,
  seeded by (seed, trial, the key's name), as DomainBed does: adding a key to
  the space changes no other key's draws.

Expanding here rather than inside Tune makes the trial list a pure function
of the sweep config: a restored sweep sees the same trials, and trials that
share planner inputs can be known before any starts.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from gemlab.errors import GemlabError

SEARCHES = ("grid", "random", "domainbed")
DISTRIBUTIONS = ("uniform", "loguniform", "randint")


class SpaceError(GemlabError, ValueError):
    """A malformed search space; the message names the key."""


def _check(space: Mapping[str, Any]) -> None:
    if not space:
        raise SpaceError("space: no keys to search")
    for key, spec in space.items():
        if isinstance(spec, list | tuple):
            if not spec:
                raise SpaceError(f"space.{key}: an empty list of values")
            continue
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise SpaceError(f"space.{key}: expected a list of values or one of {DISTRIBUTIONS}, got {spec!r}")
        ((kind, bounds),) = spec.items()
        if not isinstance(bounds, list | tuple) or len(bounds) != 2 or not bounds[0] <= bounds[1]:
            raise SpaceError(f"space.{key}: {kind} needs [low, high] with low <= high, got {bounds!r}")
        if kind == "loguniform" and bounds[0] <= 0:
            raise SpaceError(f"space.{key}: loguniform needs low > 0, got {bounds[0]}")


def _draw(spec: Any, rng: np.random.Generator) -> Any:
    if isinstance(spec, list | tuple):
        return spec[int(rng.integers(len(spec)))]
    ((kind, (low, high)),) = spec.items()
    if kind == "uniform":
        return float(rng.uniform(low, high))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return int(rng.integers(low, high + 1))


def _name_seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


def expand(space: Mapping[str, Any], search: str, num_samples: int, seed: int) -> list[dict[str, Any]]:
    """The trials of a sweep, each a ``{config key: value}`` dict, in a fixed order.

    ``num_samples`` is the number of draws for random searches and the number of repeats of the grid.
    Raises SpaceError for an unknown search, a bad space, or a distribution in a grid.
    """
    space = {str(k): list(v) if isinstance(v, list | tuple) else dict(v) for k, v in space.items()}
    _check(space)
    if search not in SEARCHES:
        raise SpaceError(f"search: unknown {search!r}; choose one of {SEARCHES}")
    if num_samples < 1:
        raise SpaceError(f"num_samples: must be >= 1, got {num_samples}")
    keys = sorted(space)
    if search == "grid":
        continuous = [k for k in keys if not isinstance(space[k], list)]
        if continuous:
            raise SpaceError(f"space: a grid needs value lists, but {continuous} are distributions")
        grid = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(space[k] for k in keys))]
        return [dict(trial) for _ in range(num_samples) for trial in grid]
    trials = []
    for index in range(num_samples):
        if search == "random":
            rng = np.random.default_rng([seed, index])
            trials.append({k: _draw(space[k], rng) for k in keys})
        else:
            trials.append({k: _draw(space[k], np.random.default_rng([seed, index, _name_seed(k)])) for k in keys})
    return trials


def _hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar: strings quoted unless plain, None as null, lists and mappings
    element by element."""
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][\w.\-]*", value) else f"'{value}'"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{_hydra_value(item)}" for key, item in value.items()) + "}"
    return repr(value) if isinstance(value, float) else str(value)


def override(key: str, value: Any) -> str:
    """A Hydra override ``key=value`` (strings quoted, so a value never parses as another type; lists and
    mappings written in Hydra's grammar: ``data.shots={noise:10}``)."""
    return f"{key}={_hydra_value(value)}"
