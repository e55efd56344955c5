"""MoGE: metadata routing with a shared expert (Rangzan et al., "Mixture of Geographical Experts").

Images are routed by *where they come from*, not by their pixels. The
metadata encoder φ (:mod:`gemlab.moe.location_encoding`: Fourier features,
or SatCLIP-style spherical harmonics of latitude/longitude, then a learned
linear map) gives r = φ(m); each expert k has a learned code u_k, and the
cosine router scores s_k(r) = <r/|r|, u_k/|u_k|> pick the top K experts with
weights α = softmax over the top K of s / τ_route. Routing is per image:
every token of a sample goes to its sample's experts.

The layer mixes the always-on shared expert f_0 in as MoGE Eq. 1:
f = γ f_0 + (1 - γ) Σ_k α_k f_k, with γ = sigmoid(g) learned; the router
hands γ to the layer as ``routing.shared_weight``. Samples with unseen
metadata (NaN) -- or every sample in fallback mode, MoGE-SE -- use the
shared expert alone (γ = 1).

Training terms, each already weighted: ``balance`` = λ_aux L_aux (Appendix
A: importance and noisy-gate load, :func:`~gemlab.moe.moge_losses.moge_aux_loss`;
in training Gaussian noise of std σ is added to s before the top K, the noise
the load term models); ``cka`` = λ_CKA L_CKA (Eq. 2, on a random subset of
tokens forced through every expert; the layer passes its experts in
``context.experts``); ``supcon`` = λ_SupCon L_SupCon (Eq. 3, on the shared
expert's mean-pooled per-image features, positives and negatives by the
*discovered* domain argmax_k α_k), which the layer asks for through
:meth:`MetadataRouter.shared_expert_losses` once it has run the shared
expert, so that expert runs once per token.

Ablations: ``shared_expert: false`` builds the layers without f_0 (f = Σ α_k f_k);
:meth:`MetadataRouter.shared_expert_only` evaluates MoGE-SE; :meth:`MetadataRouter.forced`
sends every sample to one expert (the paper's forced-expert matrix).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from gemlab.moe.location_encoding import fourier_encoding, spherical_harmonics
from gemlab.moe.losses import cka_diversity_loss
from gemlab.moe.moge_losses import moge_aux_loss, moge_supcon_loss
from gemlab.moe.routers.topk import check_weights
from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec

ENCODERS = ("fourier", "spherical_harmonics")


class MetadataRouter(nn.Module):
    """Raises ValueError for k outside 1..E, non-positive temperatures or gate noise, negative loss weights,
    an unknown encoder, spherical harmonics of other metadata than (latitude, longitude) or a degree
    outside 1..40, and fallback without the shared expert."""

    def __init__(
        self,
        dim: int,
        num_experts: int,
        metadata_dim: int = 2,
        k: int = 1,
        temperature: float = 0.1,
        encoder: str = "fourier",
        frequencies: int = 4,
        degree: int = 10,
        embed_dim: int = 32,
        balance_weight: float = 0.01,
        noise_std: float = 0.1,
        cka_weight: float = 0.0,
        cka_tokens: int = 64,
        supcon_weight: float = 0.0,
        supcon_temperature: float = 0.1,
        shared_expert: bool = True,
        fallback: bool = False,
    ) -> None:
        super().__init__()
        if not 1 <= k <= num_experts or not temperature > 0 or not supcon_temperature > 0 or not noise_std > 0:
            raise ValueError(
                f"metadata router: need k in 1..{num_experts}, temperatures > 0 and noise_std > 0, got k={k}, "
                f"temperature={temperature}, supcon_temperature={supcon_temperature}, noise_std={noise_std}"
            )
        check_weights(balance_weight=balance_weight, cka_weight=cka_weight, supcon_weight=supcon_weight)
        if encoder not in ENCODERS:
            raise ValueError(f"metadata router: encoder must be one of {ENCODERS}, got {encoder!r}")
        if encoder == "spherical_harmonics":
            if metadata_dim != 2:
                raise ValueError(
                    f"metadata router: encoder spherical_harmonics needs 2 metadata columns (lat, lon), "
                    f"the domains have {metadata_dim}"
                )
            spherical_harmonics(torch.zeros(1, 2), degree)  # raises ValueError for a degree out of range
        if fallback and not shared_expert:
            raise ValueError("metadata router: fallback=True routes to the shared expert, but shared_expert=False")
        features = 2 * metadata_dim * frequencies if encoder == "fourier" else degree**2
        self.encoder = nn.Linear(features, embed_dim)
        self.keys = nn.Parameter(torch.randn(num_experts, embed_dim) / math.sqrt(embed_dim))
        self.gamma = nn.Parameter(torch.zeros(()))
        self.num_experts, self.k, self.temperature, self.noise_std = num_experts, k, temperature, noise_std
        self.encoding, self.frequencies, self.degree = encoder, frequencies, degree
        self.balance_weight, self.cka_weight, self.cka_tokens = balance_weight, cka_weight, cka_tokens
        self.supcon_weight, self.supcon_temperature = supcon_weight, supcon_temperature
        self.uses_shared_expert, self.fallback = shared_expert, fallback  # the layers read uses_shared_expert
        self._forced: int | None = None

    def scores(self, metadata: torch.Tensor) -> torch.Tensor:
        """The cosine scores s_k(φ(m)) of each sample's metadata (B, M) for every expert: (B, E). Raises nothing."""
        if self.encoding == "fourier":
            features = fourier_encoding(metadata, self.frequencies)
        else:
            features = spherical_harmonics(metadata, self.degree)
        return F.normalize(self.encoder(features), dim=-1) @ F.normalize(self.keys, dim=-1).t()

    def forced(self, expert: int) -> AbstractContextManager[MetadataRouter]:
        """Every sample goes to ``expert`` alone (weight 1, beside the shared expert) inside the block.

        The paper's forced-expert matrix. Restored also when the block raises. Raises ValueError for an
        expert outside 0..E-1.
        """
        if not 0 <= expert < self.num_experts:
            raise ValueError(f"metadata router: cannot force expert {expert}; experts are 0..{self.num_experts - 1}")
        return self._temporarily("_forced", expert)

    def shared_expert_only(self) -> AbstractContextManager[MetadataRouter]:
        """MoGE-SE inside the block: every sample through the shared expert alone, f = f_0 (the paper's §2.2 (i)).

        Raises ValueError for a router built without the shared expert.
        """
        if not self.uses_shared_expert:
            raise ValueError("metadata router: built with shared_expert=False, so it has no shared expert to use")
        return self._temporarily("fallback", True)

    @contextmanager
    def _temporarily(self, name: str, value: object) -> Iterator[MetadataRouter]:
        before = getattr(self, name)
        setattr(self, name, value)
        try:
            yield self
        finally:
            setattr(self, name, before)

    def shared_expert_losses(self, shared: torch.Tensor, context: RoutingContext) -> dict[str, torch.Tensor]:
        """λ_SupCon times MoGE Eq. 3 on the shared expert's output per token ``shared`` (B*T, D).

        Each sample's tokens are mean-pooled first (the contrast is between images, not patches), and its
        domain is the one the router discovered for its metadata: argmax_k s_k, without gate noise. Samples
        with unseen metadata or an unknown label (-1) take no part. Only in training and with labels
        (evaluation has none).
        """
        if not (self.supcon_weight > 0 and self.training) or context.labels is None or context.metadata is None:
            return {}
        batch, length = context.batch_shape
        pooled = shared.reshape(batch, length, -1).mean(dim=1)
        labels, metadata = context.labels[::length], context.metadata[::length]
        keep = ~torch.isnan(metadata).any(dim=1) & (labels >= 0)
        with torch.no_grad():  # the discovered domain is a label here: no gradient through the argmax
            discovered = self.scores(metadata[keep]).argmax(dim=1)
        contrast = moge_supcon_loss(pooled[keep], labels[keep], discovered, self.supcon_temperature)
        return {"supcon": self.supcon_weight * contrast}

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        n, length = tokens.shape[0], context.batch_shape[1]
        gamma = torch.sigmoid(self.gamma)
        if self._forced is not None:  # the forced-expert matrix: metadata ignored
            forced = tokens.new_full((n, 1), self._forced, dtype=torch.long)
            routing = SparseRouting.from_choices(forced, None, self.num_experts)
            routing.shared_weight = gamma
            return routing
        if self.fallback:  # every token to the shared expert alone
            routing = SparseRouting.from_choices(tokens.new_full((n, 1), -1, dtype=torch.long), None, self.num_experts)
            routing.shared_weight = 1.0
            return routing
        if context.metadata is None:
            raise ValueError("metadata router: needs per-sample metadata (or fallback=True)")
        metadata = context.metadata[::length]  # (B, M): one routing decision per image
        unseen = torch.isnan(metadata).any(dim=1)
        scores = self.scores(torch.nan_to_num(metadata))  # (B, E): s_k(r)
        noisy = scores + self.noise_std * torch.randn_like(scores) if self.training else scores
        top, expert = (noisy / self.temperature).topk(self.k, dim=-1)  # (B, K)
        gate = top.softmax(dim=-1)  # α over the top K
        aux = {}
        if self.balance_weight > 0 and (~unseen).any():
            alpha = torch.zeros_like(scores).scatter(1, expert, gate)  # (B, E), zero outside the top K
            aux["balance"] = self.balance_weight * moge_aux_loss(
                alpha[~unseen], scores[~unseen], self.k, self.noise_std
            )
        if self.cka_weight > 0 and context.experts is not None and self.training:
            subset = tokens[torch.randperm(n, device=tokens.device)[: self.cka_tokens]]
            outputs = [context.experts.run_one(e, subset) for e in range(self.num_experts)]
            aux["cka"] = self.cka_weight * cka_diversity_loss(outputs)
        expert = expert.masked_fill(unseen.unsqueeze(1), -1)
        per_token = (expert.repeat_interleave(length, dim=0), gate.repeat_interleave(length, dim=0))  # (B*T, K)
        routing = SparseRouting.from_choices(*per_token, self.num_experts, aux)
        routing.shared_weight = torch.where(unseen, 1.0, gamma).repeat_interleave(length).unsqueeze(1)  # (B*T, 1)
        return routing


SPEC = RouterSpec(
    name="metadata",
    shared_expert=True,  # unless its option shared_expert is false (MetadataRouter.uses_shared_expert)
    forcible_without_table=True,  # MetadataRouter.forced: the paper's forced-expert matrix
    build=lambda dim, facts, **options: MetadataRouter(
        dim, facts.num_experts, metadata_dim=facts.metadata_dim(), **options
    ),
)
