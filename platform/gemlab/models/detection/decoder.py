"""DINO's decoder: queries that carry an anchor box, refine it layer by layer, and "look forward twice".

    decoder = DinoDecoder(dim, heads, levels=3, points=4, ffns=[DenseFFN(dim, hidden) for _ in range(6)])
    out = decoder(content, anchors, memory, memory_mask, shapes, starts, heads=prediction_heads,
                  attention_mask=mask, domain=domain)      # out.predictions: one Prediction per layer

Each query is a content vector plus an anchor box. A layer embeds the box
(sine of its 4 coordinates -> MLP) as the query's position, runs
self-attention among the queries (blocked as the denoising mask says),
deformable cross-attention into the encoder memory around the box (samples
scaled by the box size), and an FFN. The FFN is whatever the model hands
in: a :class:`DenseFFN` or an MoE layer, both called ``ffn(x, **side) ->
(y, routing or None)``; MoE layers get the previous MoE layer's router
logits (MoE++'s gating residual), and ``side`` may carry per-query
``token_labels`` (class-level GEM-DINO).

Box refinement and look-forward-twice. With σ the sigmoid, δ_i the box
head of layer i applied to its (normed) output, b̂_{i-1} the *detached*
reference layer i was given, and b_{i-1} the same box *undetached*:

    b_i          = σ(δ_i + σ⁻¹(b̂_{i-1}))      refined box; b̂_i = stopgrad(b_i) is layer i+1's reference
    loss box_i   = σ(δ_i + σ⁻¹(b_{i-1}))      what the loss sees for layer i

(b_{-1} = b̂_{-1} = the initial anchors, which are not learned through.)
Both have the same value; the second lets layer i's loss reach layer i-1's
box head through b_{i-1} ("looking forward twice"), while the reference
fed forward stays detached, so no layer's input depends on the gradient of
a later one. Each box head runs once per layer, on the normed output that
the class head also reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from gemlab.models.detection.deformable import DeformableAttention
from gemlab.models.detection.heads import MLP, PredictionHeads, inverse_sigmoid
from gemlab.models.detection.position import sine_embedding
from gemlab.models.detection.structures import Prediction


class DecoderLayer(nn.Module):
    """Self-attention, deformable cross-attention around the reference box, the given FFN; post-norm."""

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffn: nn.Module) -> None:
        super().__init__()
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attention = DeformableAttention(dim, heads, levels, points)
        self.ffn = ffn
        self.norm_self, self.norm_cross, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.levels = levels

    def forward(
        self,
        x: torch.Tensor,
        query_pos: torch.Tensor,
        reference: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        shapes: torch.Tensor,
        starts: torch.Tensor,
        attention_mask: torch.Tensor | None,
        side: dict,
    ) -> tuple[torch.Tensor, object | None]:
        """``x``, ``query_pos`` (B, T, D); ``reference`` (B, T, 4) boxes -> (B, T, D) and the FFN's routing."""
        q = x + query_pos
        attended = self.self_attention(q, q, x, attn_mask=attention_mask, need_weights=False)[0]
        x = self.norm_self(x + attended)
        boxes = reference[:, :, None, :].expand(-1, -1, self.levels, -1)  # (B, T, L, 4): one box on every level
        x = self.norm_cross(x + self.cross_attention(x + query_pos, boxes, memory, shapes, starts, memory_mask))
        y, routing = self.ffn(x, **side)
        return self.norm_ffn(x + y), routing


@dataclass
class DecoderOutput:
    """Per layer: predictions for every query (look-forward-twice boxes) and the reference it was given."""

    predictions: list[Prediction]
    references: list[torch.Tensor]  # (B, T, 4) detached boxes fed to each layer
    routings: list = field(default_factory=list)  # one per MoE FFN call


class DinoDecoder(nn.Module):
    """One :class:`DecoderLayer` per FFN in ``ffns``; the prediction heads are passed to :meth:`forward`.

    The heads are an argument rather than a part because GEMGR-DINO runs the same decoder layers
    with each expert's own heads. Raises ValueError for no FFNs or ``dim`` not a multiple of 4
    (half the width embeds each box coordinate), and what the attention raises.
    """

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffns: Sequence[nn.Module]) -> None:
        super().__init__()
        if not ffns or dim % 4:
            raise ValueError(f"decoder: need at least one layer and dim a multiple of 4, got {len(ffns)}, {dim}")
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, levels, points, ffn) for ffn in ffns)
        self.box_position = MLP(2 * dim, dim, dim, 2)  # sine(4 coordinates) -> query position
        self.norm = nn.LayerNorm(dim)
        self.dim = dim

    def forward(
        self,
        content: torch.Tensor,
        anchors: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        shapes: torch.Tensor,
        starts: torch.Tensor,
        *,
        heads: PredictionHeads,
        attention_mask: torch.Tensor | None = None,
        **side: torch.Tensor | None,
    ) -> DecoderOutput:
        """``content`` (B, T, D) and ``anchors`` (B, T, 4, inverse-sigmoid space) of all T queries; ``memory``
        (B, S, D) with ``memory_mask`` (B, S) True at padding, ``shapes`` (L, 2), ``starts`` (L,);
        ``attention_mask`` (T, T) True = blocked; ``side`` goes to every FFN (domain, metadata ...).

        Raises ValueError if ``heads`` has fewer layers than the decoder, and what an FFN raises.
        """
        if len(heads.boxes) < len(self.layers):
            raise ValueError(f"decoder: {len(self.layers)} layers but heads for {len(heads.boxes)}")
        reference = anchors.detach().sigmoid()  # b̂_{-1}
        undetached = reference  # b_{-1}: the anchors are not learned through
        x, previous_logits = content, None
        out = DecoderOutput([], [])
        for i, layer in enumerate(self.layers):
            query_pos = self.box_position(sine_embedding(reference, self.dim // 2))  # (B, T, 4·D/2) -> (B, T, D)
            x, routing = layer(
                x,
                query_pos,
                reference,
                memory,
                memory_mask,
                shapes,
                starts,
                attention_mask,
                {**side, "previous_logits": previous_logits},
            )
            if routing is not None:
                out.routings.append(routing)
                previous_logits = getattr(routing, "logits", None)  # routers that keep logits; MoE++ reads them
            hidden = self.norm(x)
            delta = heads.boxes[i](hidden)  # (B, T, 4)
            refined = (delta + inverse_sigmoid(reference)).sigmoid()  # b_i
            seen = (delta + inverse_sigmoid(undetached)).sigmoid()  # look forward twice: reaches δ_{i-1}
            out.predictions.append(Prediction(heads.classes[i](hidden), seen))
            out.references.append(reference)
            undetached, reference = refined, refined.detach()
        return out
