"""``random``: each domain to a seeded random expert that still has room (the ablation of GEM's plan).

The table is drawn once, before training: domains in a random order, each to
a uniformly chosen expert among those holding fewer than ``capacity``
domains. Routing is then exactly GEM's lookup, so the comparison isolates
the plan.
"""

from __future__ import annotations

import numpy as np

from gemlab.moe.routers.gem import GEMRouter
from gemlab.moe.spec import RouterSpec, RunFacts


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


def run_table(facts: RunFacts) -> list[int]:
    """The run's table: its domains, experts, capacity (the plan's) and seed; raises ValueError as random_table."""
    if facts.capacity is None:
        raise ValueError("random router: needs a capacity (domains per expert)")
    return random_table(facts.num_domains, facts.num_experts, facts.capacity, facts.seed)


SPEC = RouterSpec(
    name="random",
    domain_table=run_table,
    build=lambda dim, facts: GEMRouter(run_table(facts), facts.num_experts),
)
