"""Planning scenarios: a list of named datasets turned into an affinity matrix.

A scenario file (``experiments/planner/*.yaml``) describes datasets by their
visual style and their category names. Without images, each dataset's mean
feature is synthesised from seeded vectors -- one per style, one per
category name -- so datasets that look alike or share labels get similar
features, and the affinity pipeline (k-means++ anchors, cosine) runs exactly
as it will on backbone features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from gemlab.plan.affinity import CostMatrix, affinity_from_features
from gemlab.plan.errors import PlanInputError

EXPERIMENTS_DIR = Path(__file__).resolve().parents[3] / "experiments"
_REQUIRED = (
    "num_experts",
    "capacity",
    "seed",
    "feature_dim",
    "style_weight",
    "content_weight",
    "noise",
    "domains",
)


@dataclass(frozen=True)
class Scenario:
    affinity: CostMatrix
    capacity: int
    images: np.ndarray  # (N,) dataset sizes, usable as loads


def scenario_path(name_or_path: str) -> Path:
    """A path as given, or ``experiments/planner/NAME.yaml``; raises PlanInputError if neither exists."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    shipped = EXPERIMENTS_DIR / "planner" / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    available = sorted(p.stem for p in (EXPERIMENTS_DIR / "planner").glob("*.yaml"))
    raise PlanInputError(f"scenario: no file {name_or_path!r} and no shipped scenario of that name ({available})")


def _vector(rng_seed: int, key: str, dim: int) -> np.ndarray:
    # Seeded by name so adding a style or category changes no other vector.
    digest = int.from_bytes(key.encode(), "little") % (2**63)
    vector = np.random.default_rng([rng_seed, digest]).standard_normal(dim)
    return vector / np.linalg.norm(vector)


def load_scenario(name_or_path: str) -> Scenario:
    """Read a scenario and compute its affinity; raises PlanInputError naming the file and field."""
    path = scenario_path(name_or_path)
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise PlanInputError(f"{path}: expected a mapping at the top level")
    missing = [key for key in _REQUIRED if key not in config]
    if missing:
        raise PlanInputError(f"{path}: missing field(s) {missing}")
    seed, dim = int(config["seed"]), int(config["feature_dim"])
    rng = np.random.default_rng(seed)
    names, means, images = [], [], []
    for index, domain in enumerate(config["domains"]):
        for key in ("name", "style", "categories", "images"):
            if key not in domain:
                raise PlanInputError(f"{path}: domains[{index}] has no field {key!r}")
        content = np.mean([_vector(seed, f"category:{c}", dim) for c in domain["categories"]], axis=0)
        feature = config["style_weight"] * _vector(seed, f"style:{domain['style']}", dim)
        feature = feature + config["content_weight"] * content + config["noise"] * rng.standard_normal(dim)
        names.append(str(domain["name"]))
        means.append(feature)
        images.append(float(domain["images"]))
    affinity = affinity_from_features(np.array(means), names, int(config["num_experts"]), seed)
    return Scenario(affinity, int(config["capacity"]), np.array(images))
