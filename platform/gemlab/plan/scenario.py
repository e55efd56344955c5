"""Planning scenarios: a list of named datasets turned into an affinity matrix.

A scenario file (``experiments/planner/*.yaml``) describes datasets by their
visual style and their category names. Without images, each dataset's mean
feature is synthesised from seeded vectors -- one per style, one per
category name -- so datasets that look alike or share labels get similar
features, and the affinity pipeline (k-means++ anchors, cosine) runs exactly
as it will on backbone features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gemlab.handwritten import checked_field, is_name, is_number, only_known_keys, read_yaml_mapping
from gemlab.plan.affinity import CostMatrix, affinity_from_features
from gemlab.plan.errors import PlanInputError

EXPERIMENTS_DIR = Path(__file__).resolve().parents[3] / "experiments"


def _at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: type(value) is int and value >= low


# (field, test, what it must be): every field is required.
_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("num_experts", _at_least(1), "an integer >= 1"),
    ("capacity", _at_least(1), "an integer >= 1"),
    ("seed", _at_least(0), "an integer >= 0"),
    ("feature_dim", _at_least(1), "an integer >= 1"),
    ("style_weight", is_number, "a finite number"),
    ("content_weight", is_number, "a finite number"),
    ("noise", is_number, "a finite number"),
    ("domains", lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of datasets"),
)
_DOMAIN_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("name", is_name, "a non-empty string"),
    ("style", is_name, "a non-empty string"),
    ("categories", lambda v: isinstance(v, list) and len(v) > 0 and all(map(is_name, v)), "a non-empty list of names"),
    ("images", lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
)
_DOMAIN_KEYS = tuple(name for name, _, _ in _DOMAIN_FIELDS)


@dataclass(frozen=True)
class Scenario:
    affinity: CostMatrix
    capacity: int
    images: np.ndarray  # (N,) dataset sizes, usable as loads


def scenario_path(name_or_path: str) -> Path:
    """A path as given, or ``experiments/planner/NAME.yaml``.

    Raises PlanInputError naming ``name_or_path`` when neither exists, or when
    it is a file without the .yaml suffix that tells paths from names.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    if path.is_file():
        raise PlanInputError(f"{path}: a scenario file must end in .yaml or .yml")
    shipped = EXPERIMENTS_DIR / "planner" / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    available = sorted(p.stem for p in (EXPERIMENTS_DIR / "planner").glob("*.yaml"))
    raise PlanInputError(f"{name_or_path}: no such scenario file, and no shipped scenario of that name ({available})")


def _vector(rng_seed: int, key: str, dim: int) -> np.ndarray:
    # Seeded by name so adding a style or category changes no other vector.
    digest = int.from_bytes(key.encode(), "little") % (2**63)
    vector = np.random.default_rng([rng_seed, digest]).standard_normal(dim)
    return vector / np.linalg.norm(vector)


def _checked(path: Path) -> dict[str, Any]:
    """The scenario's fields, each of the type and range it needs; raises PlanInputError naming the field."""
    config = read_yaml_mapping(path, PlanInputError)
    where = str(path)
    only_known_keys(config, [name for name, _, _ in _FIELDS], where, PlanInputError)
    for name, test, wanted in _FIELDS:
        checked_field(config, name, where, test, wanted, PlanInputError)
    names: dict[str, int] = {}
    for index, domain in enumerate(config["domains"]):
        prefix = f"domains[{index}]."
        if not isinstance(domain, dict):
            raise PlanInputError(f"{where}: domains[{index}]: must be a mapping of {list(_DOMAIN_KEYS)}")
        only_known_keys(domain, _DOMAIN_KEYS, where, PlanInputError, f"domains[{index}]")
        for name, test, wanted in _DOMAIN_FIELDS:
            checked_field(domain, name, where, test, wanted, PlanInputError, prefix)
        first = names.setdefault(domain["name"], index)
        if first != index:
            raise PlanInputError(f"{where}: {prefix}name: {domain['name']!r} is also the name of domains[{first}]")
    return config


def load_scenario(name_or_path: str) -> Scenario:
    """Read a scenario and compute its affinity.

    Raises PlanInputError naming the file (and the field) when there is no
    such file or shipped scenario, the text is not YAML, a field is missing,
    unknown or of the wrong type or range, a dataset name repeats, or the
    features cannot give ``num_experts`` distinct anchors; ``OSError`` when
    the file cannot be read.
    """
    path = scenario_path(name_or_path)
    config = _checked(path)
    seed, dim = config["seed"], config["feature_dim"]
    rng = np.random.default_rng(seed)
    means = []
    for domain in config["domains"]:
        content = np.mean([_vector(seed, f"category:{c}", dim) for c in domain["categories"]], axis=0)
        feature = config["style_weight"] * _vector(seed, f"style:{domain['style']}", dim)
        means.append(feature + config["content_weight"] * content + config["noise"] * rng.standard_normal(dim))
    names = [domain["name"] for domain in config["domains"]]
    try:
        affinity = affinity_from_features(np.array(means), names, config["num_experts"], seed)
    except PlanInputError as error:
        raise PlanInputError(f"{path}: {error}") from None
    images = np.array([float(domain["images"]) for domain in config["domains"]])
    return Scenario(affinity, config["capacity"], images)
