"""Routers by name, for configs and sweeps that must name them.

    router = build_router("topk", dim=256, num_experts=8, k=2, balance_weight=0.01)

An explicit table rather than a lookup in ``globals()``: a sweep lists
exactly these names, and an unknown one is a clear error.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gemlab.moe.routers.gem import GEMRouter
from gemlab.moe.routers.sinkhorn import SinkhornRouter
from gemlab.moe.routers.soft import SoftMoERouter
from gemlab.moe.routers.topk import TopKRouter

ROUTERS: dict[str, type[nn.Module]] = {
    "topk": TopKRouter,
    "soft": SoftMoERouter,
    "sinkhorn": SinkhornRouter,
}


def build_router(name: str, *, dim: int, num_experts: int, plan=None, **options: Any) -> nn.Module:
    """A router from its name; ``gem`` takes its table from ``plan``.

    Raises ValueError for an unknown name, a ``gem`` router without a plan, or
    a plan for a different number of experts than ``num_experts``.
    """
    if name == "gem":
        if plan is None:
            raise ValueError("router gem: needs a plan (domain -> expert map)")
        if plan.num_experts != num_experts:
            raise ValueError(f"router gem: the plan has {plan.num_experts} experts, the layer {num_experts}")
        return GEMRouter.from_plan(plan, **options)
    if name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; choose one of {sorted([*ROUTERS, 'gem'])}")
    return ROUTERS[name](dim, num_experts, **options)
