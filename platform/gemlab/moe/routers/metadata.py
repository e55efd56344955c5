"""Metadata routing with a shared expert (MoGE-style: a mixture of geographic experts).

Samples are routed by *where they come from*, not by their pixels: the
metadata (e.g. latitude and longitude) is Fourier-encoded, embedded, and
compared by cosine similarity with one learned key per expert; top-k with a
temperature picks the experts. An always-on shared expert (held by the
``MoELayer``) is mixed in with a learned weight ``γ = sigmoid(g)``. Samples
with unseen metadata (NaN) -- or every sample in fallback mode -- use the
shared expert alone.

Auxiliary terms: load balance; CKA diversity among the experts' outputs on a
random subset of tokens forced through every expert (the layer passes its
experts in ``context.experts``: the router holds no reference to them); and
supervised contrast on the shared expert's per-sample features
(:func:`shared_expert_contrast`), which the layer asks for through
:meth:`MetadataRouter.shared_expert_losses` once it has run the shared
expert -- so the shared expert runs once per token.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gemlab.moe.losses import balance_loss, cka_diversity_loss, supervised_contrastive_loss
from gemlab.moe.routers.topk import check_weights
from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec


def fourier_encoding(metadata: torch.Tensor, frequencies: int) -> torch.Tensor:
    """sin/cos of 1..F multiples of each column read as degrees: (N, M) -> (N, 2 M F); smooth on the sphere."""
    radians = torch.deg2rad(metadata).unsqueeze(-1) * torch.arange(1, frequencies + 1, device=metadata.device)
    return torch.cat([radians.sin(), radians.cos()], dim=-1).flatten(1)


def shared_expert_contrast(
    features: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Supervised contrast on the shared expert: positives = same class from another domain,
    negatives = another class from the same domain (so the shared expert learns what crosses domains)."""
    same_class = labels[:, None] == labels[None, :]
    same_domain = domains[:, None] == domains[None, :]
    positives = same_class & ~same_domain
    negatives = ~same_class & same_domain
    return supervised_contrastive_loss(features, positives, positives | negatives, temperature)


class MetadataRouter(nn.Module):
    """Raises ValueError for k outside 1..E, a non-positive temperature or negative loss weights."""

    def __init__(
        self,
        dim: int,
        num_experts: int,
        metadata_dim: int = 2,
        k: int = 1,
        temperature: float = 0.1,
        frequencies: int = 4,
        embed_dim: int = 32,
        balance_weight: float = 0.01,
        cka_weight: float = 0.0,
        cka_tokens: int = 64,
        supcon_weight: float = 0.0,
        supcon_temperature: float = 0.1,
        fallback: bool = False,
    ) -> None:
        super().__init__()
        if not 1 <= k <= num_experts or not temperature > 0 or not supcon_temperature > 0:
            raise ValueError(
                f"metadata router: need k in 1..{num_experts} and temperatures > 0, "
                f"got k={k}, temperature={temperature}, supcon_temperature={supcon_temperature}"
            )
        check_weights(balance_weight=balance_weight, cka_weight=cka_weight, supcon_weight=supcon_weight)
        self.encoder = nn.Linear(2 * metadata_dim * frequencies, embed_dim)
        self.keys = nn.Parameter(torch.randn(num_experts, embed_dim) / math.sqrt(embed_dim))
        self.gamma = nn.Parameter(torch.zeros(()))
        self.num_experts, self.k, self.temperature, self.frequencies = num_experts, k, temperature, frequencies
        self.balance_weight, self.cka_weight, self.cka_tokens, self.fallback = (
            balance_weight,
            cka_weight,
            cka_tokens,
            fallback,
        )
        self.supcon_weight, self.supcon_temperature = supcon_weight, supcon_temperature

    def shared_expert_losses(self, shared: torch.Tensor, context: RoutingContext) -> dict[str, torch.Tensor]:
        """λ_SupCon times the shared expert's contrast; ``shared`` is its output per token (B*T, D).

        Each sample's tokens are mean-pooled first: the contrast is between images, not patches.
        Only in training, and only with labels and domains (evaluation has no labels).
        """
        if not (self.supcon_weight > 0 and self.training) or context.labels is None or context.domain is None:
            return {}
        batch, length = context.batch_shape
        pooled = shared.reshape(batch, length, -1).mean(dim=1)
        labels, domains = context.labels[::length], context.domain[::length]
        contrast = shared_expert_contrast(pooled, labels, domains, self.supcon_temperature)
        return {"supcon": self.supcon_weight * contrast}

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        n = tokens.shape[0]
        if context.metadata is None and not self.fallback:
            raise ValueError("metadata router: needs per-sample metadata (or fallback=True)")
        if self.fallback:  # every token to the shared expert alone
            routing = SparseRouting.from_choices(tokens.new_full((n, 1), -1, dtype=torch.long), None, self.num_experts)
            routing.shared_weight = 1.0
            return routing
        metadata = context.metadata
        unseen = torch.isnan(metadata).any(dim=1)
        embedding = self.encoder(fourier_encoding(torch.nan_to_num(metadata), self.frequencies))
        logits = F.normalize(embedding, dim=-1) @ F.normalize(self.keys, dim=-1).t() / self.temperature
        probs = logits.softmax(dim=-1)
        gate, expert = probs.topk(self.k, dim=-1)
        gate = gate / gate.sum(dim=-1, keepdim=True)
        expert = expert.masked_fill(unseen.unsqueeze(1), -1)
        aux = (
            {"balance": self.balance_weight * balance_loss(probs[~unseen], expert[~unseen])} if (~unseen).any() else {}
        )
        if self.cka_weight > 0 and context.experts is not None and self.training:
            subset = tokens[torch.randperm(n, device=tokens.device)[: self.cka_tokens]]
            outputs = [context.experts.run_one(e, subset) for e in range(self.num_experts)]
            aux["cka"] = self.cka_weight * cka_diversity_loss(outputs)
        routing = SparseRouting.from_choices(expert, gate, self.num_experts, aux)
        routing.shared_weight = torch.where(unseen, 1.0, torch.sigmoid(self.gamma)).unsqueeze(1)
        return routing


SPEC = RouterSpec(
    name="metadata",
    shared_expert=True,
    build=lambda dim, facts, **options: MetadataRouter(
        dim, facts.num_experts, metadata_dim=facts.metadata_dim(), **options
    ),
)
