"""MoE++ (Jin et al., 2024): zero-computation experts beside the FFN experts, with gating residuals.

Besides E FFN experts the router can choose *zero* experts (output 0: the
token is skipped), *copy* experts (output = the token) and *constant*
experts (output ``a1 x + a2 v_j`` with a learned vector v_j and
``(a1, a2) = softmax(W_c x)``). Only FFN choices cost FLOPs, so easy tokens
become cheap. Top-k runs over all experts with the usual balance loss.
*Gating residuals* (MoE++'s pathway-aware router, §3 of Jin et al., 2024):
the router scores of MoE layer j add a learned map of layer j - 1's scores,

    G_j(x) = W_j x_j + W_r,j G_{j-1}(x),      G_1(x) = W_1 x_1,

recursively: ``G_{j-1}`` already holds its own residual (as in the authors'
code, whose router hands its summed logits to the next layer). The models
pass them on -- the ViT from one MoE block to the next, the DINO decoder
from one MoE FFN to the next -- as ``MoELayer(..., previous_logits=routing.logits)``
of the layer before, nothing for the first; ResNet has one MoE layer, so
nothing to pass. ``gating_residual: false`` builds no ``W_r``, and the
previous logits are then ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gemlab.moe.losses import balance_loss
from gemlab.moe.routers.topk import check_weights, drop_over_capacity
from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec


@dataclass
class ZeroComputationRouting(SparseRouting):
    """SparseRouting for the FFN experts, plus what the copy and constant experts add at combine.

    Its ``logits`` (N, E_total), over every expert kind, are the next layer's gating residual.
    """

    extra: torch.Tensor | None = None  # (N, D) copy + constant contributions

    def combine(self, outputs: torch.Tensor, num_tokens: int) -> torch.Tensor:
        return super().combine(outputs, num_tokens) + self.extra


class MoEPlusPlusRouter(nn.Module):
    """Raises ValueError for k outside 1..(all experts), negative counts or weights."""

    def __init__(
        self,
        dim: int,
        num_experts: int,
        k: int = 2,
        zero_experts: int = 1,
        copy_experts: int = 1,
        constant_experts: int = 2,
        capacity_factor: float = 1.25,
        balance_weight: float = 0.01,
        gating_residual: bool = True,
    ) -> None:
        super().__init__()
        total = num_experts + zero_experts + copy_experts + constant_experts
        if min(zero_experts, copy_experts, constant_experts) < 0 or not 1 <= k <= total:
            raise ValueError(f"moepp router: need expert counts >= 0 and k in 1..{total}, got k={k}")
        check_weights(balance_weight=balance_weight)
        self.gate = nn.Linear(dim, total, bias=False)
        self.residual = nn.Linear(total, total, bias=False) if gating_residual else None
        self.constants = nn.Parameter(torch.zeros(constant_experts, dim))
        self.constant_mix = nn.Linear(dim, 2)
        self.num_experts, self.k, self.capacity_factor = num_experts, k, capacity_factor
        self.balance_weight = balance_weight
        self.first_copy = num_experts + zero_experts
        self.first_constant = self.first_copy + copy_experts

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> ZeroComputationRouting:
        """Top-k over every expert kind of ``G_j`` (the gating residual added when on and given)."""
        logits = self.gate(tokens)
        if self.residual is not None and context.previous_logits is not None:
            logits = logits + self.residual(context.previous_logits)
        probs = logits.softmax(dim=-1)
        gate, expert = probs.topk(self.k, dim=-1)
        gate = gate / gate.sum(dim=-1, keepdim=True)
        ffn = torch.where(expert < self.num_experts, expert, -1)
        capacity = math.ceil(self.capacity_factor * tokens.shape[0] * self.k / self.num_experts)
        ffn = drop_over_capacity(ffn, self.num_experts, capacity)
        copy_weight = (gate * ((expert >= self.first_copy) & (expert < self.first_constant))).sum(dim=1)
        mix = self.constant_mix(tokens).softmax(dim=-1)  # (N, 2)
        is_constant = expert >= self.first_constant
        constant_index = (expert - self.first_constant).clamp_min(0)
        constant_vectors = (gate * is_constant).unsqueeze(-1) * self.constants[constant_index]  # (N, k, D)
        extra = (copy_weight + mix[:, 0] * (gate * is_constant).sum(dim=1)).unsqueeze(1) * tokens
        extra = extra + mix[:, 1:] * constant_vectors.sum(dim=1)
        base = SparseRouting.from_choices(
            ffn, gate, self.num_experts, {"balance": self.balance_weight * balance_loss(probs, expert)}, logits
        )
        return ZeroComputationRouting(
            base.token_index, base.weight, base.segment_sizes, base.counts, base.aux_losses, logits=logits, extra=extra
        )


SPEC = RouterSpec(
    name="moepp",
    build=lambda dim, facts, **options: MoEPlusPlusRouter(dim, facts.num_experts, **options),
)
