"""What every gemlab model returns, and how it builds its routers from a config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gemlab.moe.experts import ExpertFFN, Experts
from gemlab.moe.factory import build_router
from gemlab.moe.layer import MoELayer
from gemlab.moe.routers.metadata import MetadataRouter
from gemlab.moe.routing import Routing


@dataclass
class ModelOutput:
    logits: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # summed over MoE layers, already weighted
    routings: list[Routing] = field(default_factory=list)  # one per MoE layer (routing heatmaps, loads)

    @property
    def aux_loss(self) -> torch.Tensor:
        return sum(self.aux_losses.values(), torch.zeros((), device=self.logits.device))

    @classmethod
    def collect(cls, logits: torch.Tensor, routings: list[Routing]) -> ModelOutput:
        """Sum each named auxiliary loss over the model's MoE layers."""
        aux: dict[str, torch.Tensor] = {}
        for routing in routings:
            for name, value in routing.aux_losses.items():
                aux[name] = aux[name] + value if name in aux else value
        return cls(logits, aux, routings)


def moe_layer(
    router: Mapping[str, Any],
    dim: int,
    hidden: int,
    num_experts: int,
    plan=None,
    local_experts: Sequence[int] | None = None,
) -> MoELayer:
    """An MoE layer from a router config ``{"name": "topk", "k": 2, ...}`` (and the plan, for gem).

    ``local_experts`` builds only those experts (an expert-parallel worker's share); None builds all.
    """
    options = dict(router)
    name = options.pop("name")
    built = build_router(name, dim=dim, num_experts=num_experts, plan=plan, **options)
    experts = Experts(num_experts, dim, hidden, local_experts)
    if isinstance(built, MetadataRouter):  # MoGE: a shared expert beside the routed ones, CKA over the experts
        return MoELayer(router=built.attach(experts), experts=experts, shared_expert=ExpertFFN(dim, hidden))
    return MoELayer(router=built, experts=experts)
