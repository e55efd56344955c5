"""ReLU routing with adaptive L1 sparsity (REMoE, Wang et al., 2024).

Gates are ``relu(W x)``: a token goes to every expert whose gate is
positive, with that gate as its weight -- routing is fully differentiable
and the number of active experts varies per token. Sparsity is steered by
an L1 penalty whose weight adapts every training step,
``λ <- λ * α^sign(target - sparsity)``, towards a target sparsity of
``1 - k / E`` (on average k active experts).
"""

from __future__ import annotations

import torch
from torch import nn

from gemlab.moe.losses import l1_gate_loss
from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec


class ReLURouter(nn.Module):
    """Raises ValueError for k outside 1..E, an initial λ <= 0 or α <= 1."""

    def __init__(self, dim: int, num_experts: int, k: int = 1, l1_weight: float = 1e-3, alpha: float = 1.2) -> None:
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"relu router: k must be in 1..{num_experts}, got {k}")
        if not (l1_weight > 0 and alpha > 1):
            raise ValueError(f"relu router: need l1_weight > 0 and alpha > 1, got {l1_weight}, {alpha}")
        self.gate = nn.Linear(dim, num_experts, bias=False)
        self.register_buffer("l1_weight", torch.tensor(float(l1_weight)))
        self.num_experts, self.alpha = num_experts, alpha
        self.target_sparsity = 1 - k / num_experts

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        gates = torch.relu(self.gate(tokens))  # (N, E)
        if self.training:
            with torch.no_grad():
                sparsity = (gates == 0).float().mean()
                self.l1_weight.mul_(self.alpha ** torch.sign(self.target_sparsity - sparsity))
        active = gates > 0
        expert = torch.where(active, torch.arange(self.num_experts, device=tokens.device), -1)
        aux = {"l1": self.l1_weight * l1_gate_loss(gates)}
        return SparseRouting.from_choices(expert, gates, self.num_experts, aux)


SPEC = RouterSpec(
    name="relu",
    build=lambda dim, facts, **options: ReLURouter(dim, facts.num_experts, **options),
)
