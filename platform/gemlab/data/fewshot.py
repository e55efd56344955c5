"""Few-shot views: a deterministic k-shot subset of a domain's training split.

For the few-shot adaptation study (a full base domain plus a k-shot target).
Classification takes k images per class; detection follows the usual greedy
rule -- visit images in a seeded order and keep one if it adds an instance of
a category that still has fewer than k -- so every category ends with at
least k annotated instances.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from gemlab.data.domain import Domain
from gemlab.data.errors import DataError


def few_shot(domain: Domain, shots: int, seed: int, split: str = "train") -> Domain:
    """A new domain ``<name>-<k>shot`` whose ``split`` is the k-shot subset; other splits unchanged.

    Raises DataError for shots < 1 or a category with fewer than ``shots``
    instances in the split (named).
    """
    if shots < 1:
        raise DataError(f"few-shot: shots must be >= 1, got {shots}")
    samples = domain.split(split)
    available = Counter(c for s in samples for c in ((s.label,) if s.label is not None else s.category_ids))
    short = [domain.category_names[c.id] for c in domain.categories if available[c.id] < shots]
    if short:
        raise DataError(f"few-shot: domain {domain.name!r} has fewer than {shots} instances of {short}")
    order = np.random.default_rng([seed, shots]).permutation(len(samples))
    counts: Counter = Counter()
    chosen = []
    for index in order.tolist():
        sample = samples[index]
        ids = (sample.label,) if sample.label is not None else sample.category_ids
        if any(counts[c] < shots for c in ids):  # for classification: its one class still short
            chosen.append(index)
            counts.update(ids)
    subset = tuple(samples[i] for i in sorted(chosen))
    return Domain(
        f"{domain.name}-{shots}shot",
        domain.task,
        domain.categories,
        {**domain.splits, split: subset},
        domain.metadata_columns,
    )
