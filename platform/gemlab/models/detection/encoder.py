"""The deformable encoder: every multi-scale token attends to a few samples around itself on every level.

    levels = flatten_levels(features, masks, positions)      # one sequence of all levels' tokens
    memory = DeformableEncoder(dim, hidden, heads, levels=3, points=4, depth=6)(levels)   # (B, S, D)

The encoder is dense in every variant (GEM changes only the decoder), so its
FFN is a plain :class:`DenseFFN`. Reference points are the tokens' own
centres in canvas coordinates, the same point on every level: with boxes
normalised to the padded canvas there are no per-image valid ratios to apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gemlab.models.detection.deformable import DeformableAttention


class DenseFFN(nn.Module):
    """``dim -> hidden -> dim`` (GELU, as the MoE experts), called like an MoE layer: ``ffn(x, **side) -> (y, None)``.

    The side information an MoE layer routes on (domain, metadata ...) is accepted and ignored, so
    a decoder layer calls its FFN the same way whether it is dense or an MoE layer.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, **side: object) -> tuple[torch.Tensor, None]:
        return self.net(x), None


@dataclass
class FlatLevels:
    """All levels' tokens as one sequence, and where each level lies in it."""

    tokens: torch.Tensor  # (B, S, D)
    positions: torch.Tensor  # (B, S, D) sine position + level embedding
    mask: torch.Tensor  # (B, S) True at padding
    shapes: torch.Tensor  # (L, 2) long, (height, width) per level
    starts: torch.Tensor  # (L,) long, first token of each level


def flatten_levels(
    features: list[torch.Tensor], masks: list[torch.Tensor], positions: list[torch.Tensor]
) -> FlatLevels:
    """Per level (B, D, H_l, W_l) maps, (B, H_l, W_l) masks and (B, H_l*W_l, D) positions -> one sequence.

    Raises nothing.
    """
    shapes = torch.tensor([f.shape[-2:] for f in features], dtype=torch.long, device=features[0].device)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return FlatLevels(
        tokens=torch.cat([f.flatten(2).transpose(1, 2) for f in features], dim=1),
        positions=torch.cat(positions, dim=1),
        mask=torch.cat([m.flatten(1) for m in masks], dim=1),
        shapes=shapes,
        starts=starts,
    )


def token_centres(shapes: torch.Tensor) -> torch.Tensor:
    """(S, 2) centre (x, y) of every token of every level on the canvas, in [0, 1], levels in order."""
    centres = []
    for height, width in shapes.tolist():
        y, x = torch.meshgrid(
            (torch.arange(height, device=shapes.device, dtype=torch.float32) + 0.5) / height,
            (torch.arange(width, device=shapes.device, dtype=torch.float32) + 0.5) / width,
            indexing="ij",
        )
        centres.append(torch.stack([x, y], dim=-1).reshape(-1, 2))
    return torch.cat(centres)


def token_levels(shapes: torch.Tensor) -> torch.Tensor:
    """(S,) long: the level of every token of the flattened sequence."""
    sizes = shapes[:, 0] * shapes[:, 1]
    return torch.repeat_interleave(torch.arange(len(sizes), device=shapes.device), sizes)


class EncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then an FFN; post-norm residuals (as DINO)."""

    def __init__(self, dim: int, hidden: int, heads: int, levels: int, points: int) -> None:
        super().__init__()
        self.attention = DeformableAttention(dim, heads, levels, points)
        self.ffn = DenseFFN(dim, hidden)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, levels: FlatLevels, reference: torch.Tensor) -> torch.Tensor:
        """``x`` (B, S, D); ``reference`` (B, S, L, 2) -> (B, S, D)."""
        attended = self.attention(x + levels.positions, reference, x, levels.shapes, levels.starts, levels.mask)
        x = self.norm1(x + attended)
        return self.norm2(x + self.ffn(x)[0])


class DeformableEncoder(nn.Module):
    """``depth`` encoder layers; raises ValueError for ``depth`` < 0 and what the attention raises."""

    def __init__(self, dim: int, hidden: int, heads: int, levels: int, points: int, depth: int) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"encoder: depth must be >= 0, got {depth}")
        self.layers = nn.ModuleList(EncoderLayer(dim, hidden, heads, levels, points) for _ in range(depth))

    def forward(self, levels: FlatLevels) -> torch.Tensor:
        """The memory (B, S, D) the decoder attends to."""
        centres = token_centres(levels.shapes).to(levels.tokens.dtype)  # (S, 2)
        batch, num_levels = levels.tokens.shape[0], len(levels.shapes)
        reference = centres[None, :, None, :].expand(batch, -1, num_levels, -1)  # (B, S, L, 2)
        x = levels.tokens
        for layer in self.layers:
            x = layer(x, levels, reference)
        return x
