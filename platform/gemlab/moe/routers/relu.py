"""ReLU routing with adaptive L1 sparsity (REMoE, Wang, Chen & Zhu, 2024).

Gates are ``relu(W x)``: a token goes to every expert whose gate is
positive, with that gate as its weight -- routing is fully differentiable
and the number of active experts varies per token. Sparsity is steered by
an L1 penalty whose weight adapts once per training step from the sparsity
S_i that step observed:

    λ_{i+1} = λ_i · α^sign(τ − S_i),    τ = 1 − k / E      (REMoE §3.3, its adaptive L1 regularisation)

so step i's loss uses λ_i, and S_i is the share of zero gates over the
*world's* batch of step i: the router counts zero gates and gates during the
step (``synchronised_state``), the engine averages the counts over the
data-parallel ranks, and ``update_state`` then applies the rule on every
rank alike (:mod:`gemlab.engine.router_state`). Each MoE layer keeps its
own λ from its own sparsity; the paper's single λ over the whole model is
the special case of one MoE layer.
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
        # (zero gates, gates) seen in training since the last update: always (0, 0) between steps, so not saved
        self.register_buffer("gate_counts", torch.zeros(2), persistent=False)
        self.num_experts, self.alpha = num_experts, alpha
        self.target_sparsity = 1 - k / num_experts

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        gates = torch.relu(self.gate(tokens))  # (N, E)
        if self.training:
            with torch.no_grad():
                self.gate_counts[0] += (gates == 0).sum()
                self.gate_counts[1] += gates.numel()
        active = gates > 0
        expert = torch.where(active, torch.arange(self.num_experts, device=tokens.device), -1)
        aux = {"l1": self.l1_weight * l1_gate_loss(gates)}
        return SparseRouting.from_choices(expert, gates, self.num_experts, aux)

    def synchronised_state(self) -> list[torch.Tensor]:
        """The step's gate counts: their mean over the ranks gives the world's sparsity."""
        return [self.gate_counts]

    @torch.no_grad()
    def update_state(self) -> None:
        """λ ← λ · α^sign(τ − S) with S = zero gates / gates of the step, then the counts restart; a step
        without training forwards changes nothing. Raises nothing."""
        zeros, total = self.gate_counts
        if total > 0:
            sparsity = zeros / total
            self.l1_weight.mul_(self.alpha ** torch.sign(self.target_sparsity - sparsity))
        self.gate_counts.zero_()


SPEC = RouterSpec(
    name="relu",
    build=lambda dim, facts, **options: ReLURouter(dim, facts.num_experts, **options),
)
