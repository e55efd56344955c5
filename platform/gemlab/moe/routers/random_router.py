"""``random``: each domain to a seeded random expert that still has room (the ablation of GEM's plan).

The table is drawn once, at construction: domains in a random order, each to
a uniformly chosen expert among those holding fewer than ``capacity``
domains. Routing is then exactly GEM's lookup, so the comparison isolates
the plan.
"""

from __future__ import annotations

import numpy as np

from gemlab.moe.routers.gem import GEMRouter


def random_table(num_domains: int, num_experts: int, capacity: int, seed: int) -> list[int]:
    """Raises ValueError when ``num_experts * capacity`` cannot hold ``num_domains``."""
    if num_domains < 1 or capacity < 1 or num_experts * capacity < num_domains:
        raise ValueError(
            f"random router: {num_experts} experts x capacity {capacity} cannot hold {num_domains} domains"
        )
    rng = np.random.default_rng(seed)
    load = np.zeros(num_experts, dtype=np.int64)
    table = [0] * num_domains
    for domain in rng.permutation(num_domains).tolist():
        room = np.flatnonzero(load < capacity)
        table[domain] = int(room[rng.integers(len(room))])
        load[table[domain]] += 1
    return table


class RandomRouter(GEMRouter):
    def __init__(self, dim: int, num_experts: int, num_domains: int, capacity: int, seed: int = 0) -> None:
        super().__init__(random_table(num_domains, num_experts, capacity, seed), num_experts)
