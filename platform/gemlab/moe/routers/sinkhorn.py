"""Sinkhorn routing: a balanced assignment from the router logits (Sinkhorn-MoE / BASE-like).

The matrix ``exp(logits / tau)`` (N x E) is scaled by Sinkhorn iterations
until its rows sum to 1 and its columns to N / E -- a transport plan that
loads every expert equally. Each token goes to the expert its row of that
plan favours; the combine weight is the ordinary softmax gate of that
expert, so gradients reach the router. No balance loss is needed.
"""

from __future__ import annotations

import torch
from torch import nn

from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec


def sinkhorn(logits: torch.Tensor, iterations: int, temperature: float = 1.0) -> torch.Tensor:
    """The balanced plan: rows sum to 1, columns to N / E (to the precision the iterations reach).

    Works in log space, so large logits do not overflow.
    """
    n, e = logits.shape
    log_plan = logits / temperature
    for _ in range(iterations):
        log_plan = log_plan - torch.logsumexp(log_plan, dim=0, keepdim=True) + torch.log(torch.tensor(n / e))
        log_plan = log_plan - torch.logsumexp(log_plan, dim=1, keepdim=True)
    return log_plan.exp()


class SinkhornRouter(nn.Module):
    def __init__(self, dim: int, num_experts: int, iterations: int = 10, temperature: float = 1.0) -> None:
        super().__init__()
        if iterations < 1 or not temperature > 0:
            raise ValueError(
                f"sinkhorn router: need iterations >= 1 and temperature > 0, got {iterations}, {temperature}"
            )
        self.gate = nn.Linear(dim, num_experts, bias=False)
        self.num_experts, self.iterations, self.temperature = num_experts, iterations, temperature

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        logits = self.gate(tokens)
        with torch.no_grad():
            expert = sinkhorn(logits.float(), self.iterations, self.temperature).argmax(dim=-1, keepdim=True)
        gate = logits.softmax(dim=-1).gather(1, expert)
        return SparseRouting.from_choices(expert, gate, self.num_experts)


SPEC = RouterSpec(
    name="sinkhorn",
    build=lambda dim, facts, **options: SinkhornRouter(dim, facts.num_experts, **options),
)
