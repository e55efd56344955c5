"""Long-tailed views: a seeded per-class subsample of a classification domain's training split.

The long-tailed benchmarks DQRoute (seed 004, Sec. 4.1) reports on cut a
balanced training set down with an exponential profile: with C classes in a
fixed order and imbalance ratio ρ = n_max / n_min, class c keeps

    n_c = floor(n_max · ρ^(-c / (C - 1)))        (at least one image)

images. Here ``n_max`` is the smallest per-class count of the split (so every
class can supply its quota; on a balanced split it is the per-class count),
the class order is the domain's category order, and the images a class keeps
are a seeded draw. Every other split is untouched, so evaluation stays
balanced. Applied to each domain of a mixture with the same class order, the
mixture's summed class counts follow the same profile.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from gemlab.data.domain import Domain
from gemlab.data.errors import DataError

PROFILES = ("exponential",)


def long_tail_counts(n_max: int, num_classes: int, rho: float) -> list[int]:
    """Images kept per class: ``n_c = floor(n_max · ρ^(-c/(C-1)))``, at least 1; raises DataError for ρ < 1."""
    if not rho >= 1:
        raise DataError(f"long tail: the imbalance ratio rho must be a number >= 1, got {rho!r}")
    if num_classes == 1:
        return [n_max]
    return [max(1, math.floor(n_max * rho ** (-c / (num_classes - 1)))) for c in range(num_classes)]


def long_tailed(domain: Domain, rho: float, seed: int, profile: str = "exponential", split: str = "train") -> Domain:
    """``domain`` with its ``split`` cut to :func:`long_tail_counts` per class (a seeded draw); other splits unchanged.

    The domain keeps its name (the run's config records the view). Raises DataError for a
    detection domain, an unknown ``profile``, ρ < 1, or a class without images in the split.
    """
    if profile not in PROFILES:
        raise DataError(f"long tail: profile must be one of {PROFILES}, got {profile!r}")
    samples = domain.split(split)
    if any(sample.label is None for sample in samples):
        raise DataError(f"long tail: domain {domain.name!r} is not a classification domain (a label per image)")
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_class[sample.label].append(index)
    empty = [c.name for c in domain.categories if not by_class[c.id]]
    if empty:
        raise DataError(f"long tail: domain {domain.name!r} has no {split} images of {empty}")
    n_max = min(len(by_class[c.id]) for c in domain.categories)
    quotas = long_tail_counts(n_max, len(domain.categories), rho)
    rng = np.random.default_rng([seed, round(rho * 1000)])
    chosen = []
    for category, quota in zip(domain.categories, quotas, strict=True):
        members = by_class[category.id]
        chosen.extend(members[i] for i in rng.permutation(len(members))[:quota].tolist())
    subset = tuple(samples[i] for i in sorted(chosen))
    return Domain(
        domain.name, domain.task, domain.categories, {**domain.splits, split: subset}, domain.metadata_columns
    )
