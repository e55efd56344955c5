"""DAMEX (Jain et al., 2023): a learned top-k router supervised to send each domain to its expert.

The router is the ordinary top-k softmax router (capacity, balance and
z-loss included); DAMEX adds a cross-entropy between the router logits and
the expert the domain is assigned to, ``L = λ * CE(logits, table[domain])``,
so that routing becomes dataset-aware while staying learned -- unlike GEM,
whose lookup is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gemlab.moe.routers.gem import expert_table
from gemlab.moe.routers.topk import TopKRouter, check_weights
from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec


class DAMEXRouter(nn.Module):
    """Raises ValueError for table entries outside the experts or a negative weight (and TopKRouter's errors)."""

    def __init__(
        self, dim: int, num_experts: int, table: Sequence[int], damex_weight: float = 1.0, **topk_options: float
    ) -> None:
        super().__init__()
        table = expert_table(table, num_experts, "damex")
        check_weights(damex_weight=damex_weight)
        self.topk = TopKRouter(dim, num_experts, **topk_options)
        self.register_buffer("table", table, persistent=False)
        self.num_experts, self.damex_weight = num_experts, damex_weight

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        routing = self.topk(tokens, context)
        if self.training:
            if context.domain is None:
                raise ValueError("damex router: training needs the domain id of every sample")
            logits = self.topk.gate(tokens)
            routing.aux_losses["damex"] = self.damex_weight * F.cross_entropy(logits, self.table[context.domain])
        return routing


SPEC = RouterSpec(
    name="damex",
    plan_level="domain",
    build=lambda dim, facts, **options: DAMEXRouter(dim, facts.num_experts, facts.plan_table(), **options),
)
