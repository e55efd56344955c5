"""Class-level GEM (paper §4.8): route tokens by class, through a learned assignment predictor.

With thousands of classes the plan maps *classes* to experts, but a token's
class is unknown at test time. A single linear layer predicts each token's
expert and is trained with cross-entropy against the plan's class -> expert
map (no balance loss). During training tokens follow the plan (the labels
are known, so experts see exactly their classes); in evaluation they follow
the predictor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gemlab.moe.routers.gem import expert_table
from gemlab.moe.routers.topk import check_weights
from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec


class ClassGEMRouter(nn.Module):
    """Raises ValueError for table entries outside the experts or a negative loss weight."""

    def __init__(self, dim: int, num_experts: int, table: Sequence[int], predictor_weight: float = 1.0) -> None:
        super().__init__()
        table = expert_table(table, num_experts, "class_gem")
        check_weights(predictor_weight=predictor_weight)
        self.register_buffer("table", table, persistent=False)
        self.predictor = nn.Linear(dim, num_experts)
        self.num_experts, self.predictor_weight = num_experts, predictor_weight

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        logits = self.predictor(tokens)
        if not self.training:
            return SparseRouting.from_choices(logits.argmax(dim=-1, keepdim=True), None, self.num_experts)
        if context.labels is None:
            raise ValueError("class_gem router: training needs the class labels of every sample")
        target = self.table[context.labels]
        aux = {"assignment": self.predictor_weight * F.cross_entropy(logits, target)}
        return SparseRouting.from_choices(target.unsqueeze(1), None, self.num_experts, aux)


SPEC = RouterSpec(
    name="class_gem",
    plan_level="class",
    build=lambda dim, facts, **options: ClassGEMRouter(dim, facts.num_experts, facts.plan_table(), **options),
)
