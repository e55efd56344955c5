"""Experts -> training workers, deterministically.

The plan maps tasks to experts and never depends on how many workers train
it; placement maps experts to the W workers that exist *now*. Re-placement
when the world size changes (an elastic restart on more or fewer nodes) is
just another call with the new W: the plan, and so every checkpointed
expert, stays the same.

* E == W: expert j on rank j.
* E > W: several experts per worker, balanced by load -- longest processing
  time first: experts by decreasing load, each to the least-loaded rank.
* E < W: each expert gets a replica group of contiguous ranks (good for node
  locality); the W - E spare workers go to experts in proportion to load
  (largest remainder), so a 32-GPU run with 8 experts works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gemlab.plan.errors import PlanInputError


@dataclass(frozen=True)
class Placement:
    num_workers: int
    expert_workers: tuple[tuple[int, ...], ...]  # expert j -> ranks holding it (its replica group)
    worker_experts: tuple[tuple[int, ...], ...]  # rank w -> experts it owns
    expert_loads: tuple[float, ...]

    def replica_group(self, expert: int) -> tuple[int, ...]:
        return self.expert_workers[expert]

    def worker_load(self, rank: int) -> float:
        """Load a rank carries: each of its experts' load shared among that expert's replicas."""
        return sum(self.expert_loads[j] / len(self.expert_workers[j]) for j in self.worker_experts[rank])

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "expert_workers": [list(group) for group in self.expert_workers],
            "expert_loads": list(self.expert_loads),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Placement:
        return _from_groups([tuple(g) for g in data["expert_workers"]], data["num_workers"], data["expert_loads"])


def _from_groups(groups: list[tuple[int, ...]], num_workers: int, loads: Sequence[float]) -> Placement:
    owned: list[list[int]] = [[] for _ in range(num_workers)]
    for expert, group in enumerate(groups):
        for rank in group:
            owned[rank].append(expert)
    return Placement(
        num_workers,
        tuple(tuple(sorted(g)) for g in groups),
        tuple(tuple(o) for o in owned),
        tuple(float(x) for x in loads),
    )


def _validated(expert_loads, num_workers: int) -> np.ndarray:
    loads = np.asarray(expert_loads, dtype=np.float64)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int | np.integer) or num_workers < 1:
        raise PlanInputError(f"placement: num_workers must be an integer >= 1, got {num_workers!r}")
    if loads.ndim != 1 or len(loads) == 0:
        raise PlanInputError(f"placement: expected one load per expert (a non-empty list), got shape {loads.shape}")
    bad = np.flatnonzero(~np.isfinite(loads) | (loads < 0))
    if len(bad):
        raise PlanInputError(f"placement: expert {bad[0]} has load {loads[bad[0]]}; loads must be finite and >= 0")
    return loads


def _replica_sizes(loads: np.ndarray, num_workers: int) -> np.ndarray:
    """One worker per expert, the spare ones by largest remainder of their load share."""
    experts = len(loads)
    shares = loads / loads.sum() if loads.sum() > 0 else np.full(experts, 1.0 / experts)
    quota = shares * (num_workers - experts)
    sizes = 1 + np.floor(quota).astype(np.int64)
    remainder = quota - np.floor(quota)
    leftover = num_workers - int(sizes.sum())
    order = np.lexsort((np.arange(experts), -remainder))  # largest remainder, then lower expert index
    sizes[order[:leftover]] += 1
    return sizes


def place_experts(expert_loads: Sequence[float] | np.ndarray, num_workers: int) -> Placement:
    """Place E experts on ``num_workers`` ranks (see the module docstring for the rules).

    Raises PlanInputError for num_workers < 1 and for empty, negative or non-finite loads.
    """
    loads = _validated(expert_loads, num_workers)
    experts = len(loads)
    if experts == num_workers:
        groups = [(j,) for j in range(experts)]
    elif experts > num_workers:
        rank_load = np.zeros(num_workers)
        rank_count = np.zeros(num_workers, dtype=np.int64)
        rank_of = np.empty(experts, dtype=np.int64)
        for j in np.lexsort((np.arange(experts), -loads)).tolist():
            # least load first; among equals the rank with fewer experts, then the lowest rank
            rank = int(np.lexsort((np.arange(num_workers), rank_count, rank_load))[0])
            rank_of[j] = rank
            rank_load[rank] += loads[j]
            rank_count[rank] += 1
        groups = [(int(rank_of[j]),) for j in range(experts)]
    else:
        starts = np.concatenate([[0], np.cumsum(_replica_sizes(loads, num_workers))])
        groups = [tuple(range(int(starts[j]), int(starts[j + 1]))) for j in range(experts)]
    return _from_groups(groups, num_workers, loads)
