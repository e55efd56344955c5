"""Top-k softmax routing with capacity, token dropping, balance loss and z-loss (Switch / GShard).

The "standard MoE" baseline (and DINO-MoE's router). Each token picks its k
most probable experts; an expert takes at most ``capacity = ceil(cf * N * k / E)``
rows, first choices before second choices and earlier tokens first, and
drops the rest (a dropped token passes through the residual connection of
the surrounding block). Combine weights are the gate probabilities: the raw
probability for k = 1 (Switch), renormalised over the k choices for k > 1 (GShard).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gemlab.moe.losses import balance_loss, z_loss
from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec


def check_weights(**weights: float) -> None:
    """Raise ValueError naming any negative or non-finite loss weight."""
    for name, value in weights.items():
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"router: loss weight {name} must be a finite number >= 0, got {value}")


def drop_over_capacity(expert: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """``expert`` (N, k) with choices beyond each expert's capacity set to -1.

    Priority: slot 0 of every token before slot 1, earlier tokens first.
    Entries already -1 (no FFN expert chosen) stay -1 and take no capacity.
    """
    slot_major = expert.t().reshape(-1)  # (k*N,) slot 0 of all tokens, then slot 1 ...
    routed = (slot_major >= 0).unsqueeze(1)
    one_hot = torch.nn.functional.one_hot(slot_major.clamp_min(0), num_experts) * routed
    position = (one_hot.cumsum(dim=0) * one_hot).sum(dim=1) - 1  # rank of each row within its expert
    kept = torch.where(position < capacity, slot_major, torch.full_like(slot_major, -1))
    return kept.view(expert.shape[1], expert.shape[0]).t()


class TopKRouter(nn.Module):
    """Raises ValueError for k outside 1..E, capacity_factor <= 0 or negative loss weights."""

    def __init__(
        self,
        dim: int,
        num_experts: int,
        k: int = 1,
        capacity_factor: float = 1.25,
        balance_weight: float = 0.01,
        z_weight: float = 0.001,
    ) -> None:
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"topk router: k must be in 1..{num_experts} (the number of experts), got {k}")
        if not capacity_factor > 0:
            raise ValueError(f"topk router: capacity_factor must be > 0, got {capacity_factor}")
        check_weights(balance_weight=balance_weight, z_weight=z_weight)
        self.gate = nn.Linear(dim, num_experts, bias=False)
        self.num_experts, self.k, self.capacity_factor = num_experts, k, capacity_factor
        self.balance_weight, self.z_weight = balance_weight, z_weight

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        logits = self.gate(tokens)  # (N, E)
        probs = logits.softmax(dim=-1)
        gate, expert = probs.topk(self.k, dim=-1)  # (N, k)
        if self.k > 1:
            gate = gate / gate.sum(dim=-1, keepdim=True)
        capacity = math.ceil(self.capacity_factor * tokens.shape[0] * self.k / self.num_experts)
        aux = {"balance": self.balance_weight * balance_loss(probs, expert), "z": self.z_weight * z_loss(logits)}
        return SparseRouting.from_choices(
            drop_over_capacity(expert, self.num_experts, capacity), gate, self.num_experts, aux
        )


SPEC = RouterSpec(
    name="topk",
    build=lambda dim, facts, **options: TopKRouter(dim, facts.num_experts, **options),
)
