"""``gem_soft``: GEM without rounding -- a domain's tokens combined over experts with the LP plan's weights.

GEM's planner solves the LP relaxation of the domain -> expert assignment (GEM Eq. 4), with
affinities c_ij, loads w_i and capacities C_j:

    maximise  Σ_ij c_ij x_ij   subject to   Σ_j x_ij = 1          for every domain i,
                                            Σ_i w_i x_ij ≤ C_j    for every expert j,   0 ≤ x_ij ≤ 1

(the paper counts domains, every w_i = 1; ``plan.capacity_mode=load`` weighs them by sampling mass),
and its compiler rounds x to one expert per domain. This router skips the compiler: every token of a
domain-d sample goes to each expert j with x_dj > 0, and their outputs are summed with weights x_dj,
``y = Σ_j x_dj f_j(token)``. That is the "GEM w/o rounding" row of GEM's Table VII, which the paper
finds close to Sinkhorn routing because both spread an input softly over experts. (Table VI's
"W/O Rounding" is another ablation: each domain to its best expert, ``plan.strategy=argmax``.)

Under count capacities (``plan.capacity_mode=count``) the LP is integral -- its matrix is totally
unimodular (docs/planner.md) -- so every row of x is one-hot and this router routes exactly as GEM's
lookup does. The two differ under load capacities (``plan.capacity_mode=load``), whose LP splits
domains across experts. A split domain's tokens need several experts, so no worker can hold only its
experts' domains: the router declares no domain table and trains data-parallel. It can still be forced
to one expert, so the cross-expert matrix covers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import torch
from torch import nn

from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec, RunFacts

_ROW_SUM_TOLERANCE = 1e-6  # the LP's rows sum to 1 up to HiGHS's feasibility tolerance (1e-10)


class GEMSoftRouter(nn.Module):
    """Routes each token to the experts of its sample's domain, weighted by the LP plan ``x`` (domains, experts).

    Raises ValueError naming the router for an ``x`` of another expert count, with a negative entry, or
    with a row that does not sum to 1; when called, for a context without domain ids or with an id that
    ``x`` has no row for.
    """

    def __init__(self, x: np.ndarray, num_experts: int) -> None:
        super().__init__()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != num_experts or len(x) == 0:
            raise ValueError(f"gem_soft router: the LP plan has shape {x.shape}, not (domains, {num_experts})")
        sums = x.sum(axis=1)
        if (x < 0).any() or np.abs(sums - 1).max() > _ROW_SUM_TOLERANCE:
            raise ValueError(f"gem_soft router: every row of the LP plan must be weights summing to 1, got {sums}")
        support = x > 0
        width = int(support.sum(axis=1).max())
        experts = np.full((len(x), width), -1, dtype=np.int64)  # (domains, width): a domain's experts, -1 = none
        weights = np.zeros((len(x), width))
        for d, row in enumerate(support):
            chosen = np.flatnonzero(row)
            experts[d, : len(chosen)], weights[d, : len(chosen)] = chosen, x[d, chosen]
        self.register_buffer("experts", torch.from_numpy(experts), persistent=False)
        self.register_buffer("weights", torch.from_numpy(weights).float(), persistent=False)
        self.num_experts = num_experts
        self._forced: int | None = None

    def forced(self, expert: int) -> AbstractContextManager[GEMSoftRouter]:
        """Every token goes to ``expert`` alone, at weight 1, inside the block (the cross-expert matrix).

        Restored also when the block raises. Raises ValueError for an expert outside 0..num_experts-1.
        """
        if not 0 <= expert < self.num_experts:
            raise ValueError(f"gem_soft router: cannot force expert {expert}; experts are 0..{self.num_experts - 1}")
        return self._forcing(expert)

    @contextmanager
    def _forcing(self, expert: int) -> Iterator[GEMSoftRouter]:
        before, self._forced = self._forced, expert
        try:
            yield self
        finally:
            self._forced = before

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        ids = context.domain
        if ids is None:
            raise ValueError("gem_soft router: routing by domain needs the domain id of every sample")
        low, high = torch.aminmax(ids)
        if int(low) < 0 or int(high) >= len(self.experts):
            raise ValueError(f"gem_soft router: domain ids must be in 0..{len(self.experts) - 1}, got {ids.unique()}")
        if self._forced is not None:
            return SparseRouting.from_choices(ids.new_full((len(ids), 1), self._forced), None, self.num_experts)
        return SparseRouting.from_choices(self.experts[ids], self.weights[ids], self.num_experts)  # (N, width) each


def lp_plan(facts: RunFacts) -> np.ndarray:
    """The plan's LP solution x (domains, experts); raises ValueError naming the router and ``plan.strategy``.

    Only a strategy that solves the LP keeps x (``gem``); a plan without it, or of another expert count,
    is refused rather than routed by something else.
    """
    plan = facts.plan
    x = getattr(plan, "fractional", None)
    if x is None:
        strategy = getattr(plan, "strategy", None)
        raise ValueError(
            f"gem_soft router: plan.strategy={strategy} keeps no LP solution to weight experts by; "
            "use plan.strategy=gem"
        )
    if plan.num_experts != facts.num_experts:
        raise ValueError(f"gem_soft router: the plan has {plan.num_experts} experts, the layer {facts.num_experts}")
    return x


SPEC = RouterSpec(
    name="gem_soft",
    plan_level="domain",
    build=lambda dim, facts: GEMSoftRouter(lp_plan(facts), facts.num_experts),
    forcible_without_table=True,
)
