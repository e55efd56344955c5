"""Routers by name, for configs and sweeps that must name them.

    router = build_router("topk", dim=256, num_experts=8, k=2, balance_weight=0.01)

An explicit table rather than a lookup in ``globals()``: a sweep lists
exactly these names, and an unknown one is a clear error.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gemlab.moe.routers.class_gem import ClassGEMRouter
from gemlab.moe.routers.confidence import ConfidenceRouter
from gemlab.moe.routers.damex import DAMEXRouter
from gemlab.moe.routers.gem import GEMRouter
from gemlab.moe.routers.metadata import MetadataRouter
from gemlab.moe.routers.moepp import MoEPlusPlusRouter
from gemlab.moe.routers.random_router import RandomRouter
from gemlab.moe.routers.relu import ReLURouter
from gemlab.moe.routers.sinkhorn import SinkhornRouter
from gemlab.moe.routers.soft import SoftMoERouter
from gemlab.moe.routers.topk import TopKRouter

ROUTERS: dict[str, type[nn.Module]] = {
    "topk": TopKRouter,
    "soft": SoftMoERouter,
    "sinkhorn": SinkhornRouter,
    "relu": ReLURouter,
    "random": RandomRouter,
    "moepp": MoEPlusPlusRouter,
    "metadata": MetadataRouter,
    "confidence": ConfidenceRouter,
}

# Routers whose table comes from a Plan (domain -> expert, or class -> expert).
_PLANNED = ("gem", "class_gem", "damex")


def build_router(name: str, *, dim: int, num_experts: int, plan=None, **options: Any) -> nn.Module:
    """A router from its name; ``gem`` takes its table from ``plan``.

    Raises ValueError for an unknown name, a ``gem`` router without a plan, or
    a plan for a different number of experts than ``num_experts``.
    """
    if name in _PLANNED:
        if plan is None:
            raise ValueError(f"router {name}: needs a plan (task -> expert map)")
        if plan.num_experts != num_experts:
            raise ValueError(f"router {name}: the plan has {plan.num_experts} experts, the layer {num_experts}")
        if name == "gem":
            return GEMRouter.from_plan(plan, **options)
        table_router = {"class_gem": ClassGEMRouter, "damex": DAMEXRouter}[name]
        return table_router(dim, num_experts, plan.assignment.tolist(), **options)
    if name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; choose one of {sorted([*ROUTERS, *_PLANNED])}")
    return ROUTERS[name](dim, num_experts, **options)
