"""``MoELayer``: experts plus a router, composed by keyword.

    layer = MoELayer(router=TopKRouter(dim, 8, k=2), experts=Experts(8, dim, 4 * dim))
    y, routing = layer(x, domain=domain_ids)      # x: (B, T, D) tokens or (B, D) pooled features

The layer flattens tokens, expands per-sample side information to tokens,
asks the router for a ``Routing`` (the context also carries the layer's
experts, for a router loss over their outputs: MoGE's CKA), and runs
dispatch -> experts -> combine.
It never looks at the router's type; the auxiliary losses come back in
``routing.aux_losses`` (already weighted), not on the output tensor. A
shared expert is mixed in convexly with the router's ``routing.shared_weight``
γ (MoGE Eq. 1: γ f_0 + (1 - γ) · routed; γ = 1: the shared expert alone). A
router that regularises the layer's shared expert defines
``shared_expert_losses(shared_output, context)``; the layer hands it the
shared expert's output, so that expert runs once.
"""

from __future__ import annotations

import torch
from torch import nn

from gemlab.moe.experts import Experts
from gemlab.moe.routing import Routing, RoutingContext


class MoELayer(nn.Module):
    """Raises ValueError when the router and the experts disagree on the number of experts."""

    def __init__(self, *, router: nn.Module, experts: Experts, shared_expert: nn.Module | None = None) -> None:
        super().__init__()
        if router.num_experts != experts.num_experts:
            raise ValueError(
                f"MoELayer: the router routes to {router.num_experts} experts, "
                f"but the layer holds {experts.num_experts}"
            )
        self.router, self.experts, self.shared_expert = router, experts, shared_expert

    def forward(
        self,
        x: torch.Tensor,
        *,
        domain: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        metadata: torch.Tensor | None = None,
        previous_logits: torch.Tensor | None = None,
        token_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Routing]:
        """``x`` (B, T, D) or (B, D); ``domain``/``labels``/``metadata`` are per sample (B, ...).

        ``previous_logits`` are per token (B*T, ...): the router logits of the
        previous MoE layer, for routers with gating residuals (MoE++).
        ``token_labels`` (B, T) or (B,) long are per token, -1 where a token's
        class is unknown (a detector's queries: a denoising positive knows its
        object's class, a matching query does not); the router sees them as
        ``context.labels``, in place of the per-sample ``labels``.

        Raises ValueError for an input that is not 2- or 3-dimensional, both ``labels`` and
        ``token_labels``, or ``token_labels`` of another shape than ``x.shape[:-1]``; and what the
        router raises.
        """
        if x.dim() not in (2, 3):
            raise ValueError(f"MoELayer: expected (B, T, D) or (B, D) input, got shape {tuple(x.shape)}")
        if token_labels is not None and labels is not None:
            raise ValueError("MoELayer: give per-sample `labels` or per-token `token_labels`, not both")
        if token_labels is not None and token_labels.shape != x.shape[:-1]:
            raise ValueError(
                f"MoELayer: token_labels must have shape {tuple(x.shape[:-1])} (one per token), "
                f"got {tuple(token_labels.shape)}"
            )
        batch_shape = (x.shape[0], x.shape[1] if x.dim() == 3 else 1)
        tokens = x.reshape(-1, x.shape[-1])  # (B*T, D)
        context = RoutingContext.for_batch(batch_shape, domain=domain, labels=labels, metadata=metadata)
        if token_labels is not None:
            context.labels = token_labels.reshape(-1)  # (B*T,)
        context.previous_logits, context.experts = previous_logits, self.experts
        routing = self.router(tokens, context)
        y = routing.combine(self.experts(routing.dispatch(tokens), routing.segment_sizes), tokens.shape[0])
        if self.shared_expert is not None:
            shared = self.shared_expert(tokens)
            gamma = routing.shared_weight  # MoGE Eq. 1: f = γ f_0 + (1 - γ) Σ_k α_k f_k
            y = gamma * shared + (1 - gamma) * y
            regularise = getattr(self.router, "shared_expert_losses", None)  # e.g. MoGE's supervised contrast
            if regularise is not None:
                routing.aux_losses.update(regularise(shared, context))
        return y.reshape(x.shape), routing
