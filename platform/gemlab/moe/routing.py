"""What a router decides, and the side information it may decide on.

A router returns one ``Routing`` value: which rows each expert receives
(``dispatch``), how expert outputs return to the tokens (``combine``), how
many tokens each expert got, and named auxiliary losses already multiplied
by their weights. The layer calls ``dispatch`` and ``combine`` and never
asks which router produced them; neither has parameters.

Two forms cover every router:

* ``SparseRouting`` -- each token to a few experts with weights (GEM, top-k,
  Sinkhorn, ...). Rows are grouped by expert with one gather and returned
  with one scatter-add; when the grouping is the identity (one expert, or
  tokens already in expert order) both are skipped.
* ``SlotRouting`` -- Soft MoE: each expert sees weighted averages of a
  sequence's tokens (slots), and each token a weighted average of slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gemlab.moe.experts import Experts


@dataclass
class RoutingContext:
    """Per-token side information (the layer expands per-sample values to tokens).

    ``domain``: domain id of the token's sample (GEM, DAMEX, random);
    ``labels``: class labels (class-level GEM, supervised contrast): the token's sample's label, or the
    token's own class where the model knows one per token (a detector's denoising queries; -1 = unknown);
    ``metadata``: per-sample features such as a location encoding (MoGE);
    ``batch_shape``: (B, T), so routers that work per sequence (Soft MoE) can;
    ``previous_logits``: per-token router logits of the previous MoE layer (MoE++'s gating residual);
    ``experts``: the layer's experts, for a loss that compares their outputs (MoGE's CKA) -- handed over
    per call, so a router never holds a reference to experts that its layer owns.
    """

    batch_shape: tuple[int, int]
    domain: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    metadata: torch.Tensor | None = None
    previous_logits: torch.Tensor | None = None
    experts: Experts | None = None

    @classmethod
    def for_batch(cls, batch_shape: tuple[int, int], **per_sample: torch.Tensor | None) -> RoutingContext:
        """Expand per-sample tensors (B, ...) to per-token ones (B*T, ...)."""
        tokens = batch_shape[1]
        expanded = {k: None if v is None else v.repeat_interleave(tokens, dim=0) for k, v in per_sample.items()}
        return cls(batch_shape, **expanded)


@dataclass
class SparseRouting:
    """Dispatched row r is token ``token_index[r]``, combined back with ``weight[r]``; rows grouped by expert."""

    token_index: torch.Tensor | None  # (rows,) long; None = every token once, in order (no gather/scatter)
    weight: torch.Tensor | None  # (rows,) combine weights; None = all ones
    segment_sizes: list[int]
    counts: torch.Tensor  # (E,) tokens each expert received
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    shared_weight: torch.Tensor | float = 1.0  # how a layer's shared expert (if any) is mixed in
    # (N, E') per-token router logits in token order, for routers whose logits are used after the layer: the next
    # layer's gating residual (MoE++), a loss on queries known only after matching (class-level GEM); else None
    logits: torch.Tensor | None = None

    @classmethod
    def from_choices(
        cls,
        expert: torch.Tensor,
        weight: torch.Tensor | None,
        num_experts: int,
        aux_losses: dict[str, torch.Tensor] | None = None,
        logits: torch.Tensor | None = None,
    ) -> SparseRouting:
        """Build from per-token choices ``expert`` (N, k) (-1 = dropped) and weights (N, k); ``logits`` are kept.

        The sort is stable, so within an expert rows keep token order: a
        mixed GEM batch stays grouped by sample. Raises nothing.
        """
        n, k = expert.shape
        flat = expert.reshape(-1)
        if k == 1 and n and bool((flat[0] >= 0) & torch.all(flat[1:] >= flat[:-1])):
            # every token kept and already in expert order (a one-domain or sorted GEM batch):
            # no sort, no gather, no scatter
            counts = torch.bincount(flat, minlength=num_experts)
            row_weight = None if weight is None else weight.reshape(-1)
            return cls(None, row_weight, counts.tolist(), counts, aux_losses or {}, logits=logits)
        kept = torch.nonzero(flat >= 0).squeeze(1)
        order = torch.sort(flat[kept], stable=True).indices
        rows = kept[order]
        counts = torch.bincount(flat[kept], minlength=num_experts)
        token_index = torch.div(rows, k, rounding_mode="floor")
        row_weight = None if weight is None else weight.reshape(-1)[rows]
        return cls(token_index, row_weight, counts.tolist(), counts, aux_losses or {}, logits=logits)

    def dispatch(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens if self.token_index is None else tokens.index_select(0, self.token_index)

    def combine(self, outputs: torch.Tensor, num_tokens: int) -> torch.Tensor:
        if self.weight is not None:
            outputs = outputs * self.weight.unsqueeze(1).to(outputs.dtype)
        if self.token_index is None:
            return outputs
        combined = outputs.new_zeros(num_tokens, outputs.shape[1])
        return combined.index_add_(0, self.token_index, outputs)


@dataclass
class SlotRouting:
    """Soft MoE: ``dispatch_weights`` (B, T, E*S) softmaxed over T, ``combine_weights`` over E*S."""

    dispatch_weights: torch.Tensor
    combine_weights: torch.Tensor
    num_experts: int
    counts: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    shared_weight: torch.Tensor | float = 1.0

    @property
    def segment_sizes(self) -> list[int]:
        batch, _, slots = self.dispatch_weights.shape
        return [batch * slots // self.num_experts] * self.num_experts

    def dispatch(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, slots = self.dispatch_weights.shape
        x = tokens.view(batch, length, -1)
        mixed = torch.einsum("btd,bts->bsd", x, self.dispatch_weights)  # (B, E*S, D)
        per_expert = mixed.view(batch, self.num_experts, slots // self.num_experts, -1).transpose(0, 1)
        return per_expert.reshape(-1, x.shape[-1])  # (E*B*S, D), grouped by expert

    def combine(self, outputs: torch.Tensor, num_tokens: int) -> torch.Tensor:
        batch, _, slots = self.combine_weights.shape
        per_slot = outputs.view(self.num_experts, batch, slots // self.num_experts, -1).transpose(0, 1)
        y = torch.einsum("bsd,bts->btd", per_slot.reshape(batch, slots, -1), self.combine_weights)
        return y.reshape(num_tokens, -1)


Routing = SparseRouting | SlotRouting
