"""Soft MoE (Puigcerver et al., 2024): experts process weighted averages of tokens.

Each expert owns S slots. Per sequence, slot s is a softmax-over-tokens
average of the tokens (dispatch), and each output token a softmax-over-slots
average of the expert outputs (combine), both from the same logits
``X Phi``. Nothing is dropped and there is no balance loss; as in the paper,
tokens and Phi are L2-normalised and the logits rescaled by a learned scalar.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gemlab.moe.routing import RoutingContext, SlotRouting
from gemlab.moe.spec import RouterSpec


class SoftMoERouter(nn.Module):
    def __init__(self, dim: int, num_experts: int, slots_per_expert: int = 1) -> None:
        super().__init__()
        if slots_per_expert < 1:
            raise ValueError(f"soft router: slots_per_expert must be >= 1, got {slots_per_expert}")
        self.phi = nn.Parameter(torch.randn(dim, num_experts * slots_per_expert) / dim**0.5)
        self.scale = nn.Parameter(torch.ones(()))
        self.num_experts, self.slots_per_expert = num_experts, slots_per_expert

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SlotRouting:
        batch, length = context.batch_shape
        logits = self.scale * F.normalize(tokens, dim=-1) @ F.normalize(self.phi, dim=0)  # (N, E*S)
        logits = logits.view(batch, length, -1)
        dispatch = logits.softmax(dim=1)  # over the sequence's tokens
        combine = logits.softmax(dim=2)  # over all slots
        counts = torch.full((self.num_experts,), batch * self.slots_per_expert, device=tokens.device)
        return SlotRouting(dispatch, combine, self.num_experts, counts)


SPEC = RouterSpec(
    name="soft",
    build=lambda dim, facts, **options: SoftMoERouter(dim, facts.num_experts, **options),
)
