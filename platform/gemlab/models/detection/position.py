"""Where a token is: sine embeddings of canvas coordinates, and a learned embedding per feature level.

    position = LevelPositions(dim=256, levels=3)
    pos = position(masks)          # masks: per level (B, H_l, W_l), True at padding -> per level (B, H_l*W_l, D)

Pixel positions are measured in the same frame as the boxes: the padded
canvas (see :mod:`gemlab.models.detection.structures`). A pixel's coordinate
counts only the unpadded pixels before it, so the padding (right of and below
the image) repeats the image's last coordinate instead of running on; for a
top-left letterboxed image the unpadded pixels thus sit exactly at their
canvas coordinates, the frame in which the decoder embeds its boxes with the
same sine function (:func:`sine_embedding`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_embedding(coords: torch.Tensor, feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """Each (floating) coordinate in [0, 1] as ``feats`` sines and cosines of ``2π x / temperature^(2i/feats)``.

    ``coords`` (..., k) -> (..., k * feats), coordinate by coordinate, sine and cosine interleaved.
    Raises ValueError for an odd ``feats``.
    """
    if feats % 2:
        raise ValueError(f"sine embedding: feats must be even, got {feats}")
    steps = torch.arange(feats, dtype=torch.float32, device=coords.device)
    frequencies = temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / feats)  # (feats,)
    angles = coords[..., None].float() * (2 * math.pi) / frequencies  # (..., k, feats)
    embedded = torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1)  # (..., k, feats/2, 2)
    return embedded.flatten(-3).to(coords.dtype)


def pixel_coordinates(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) padding mask -> (B, H, W, 2) pixel-centre (y, x) on the canvas, counting unpadded pixels only."""
    valid = (~mask).float()
    height, width = mask.shape[-2:]
    y = (valid.cumsum(dim=1) - 0.5).clamp_min(0.0) / height
    x = (valid.cumsum(dim=2) - 0.5).clamp_min(0.0) / width
    return torch.stack([y, x], dim=-1)


class LevelPositions(nn.Module):
    """Sine position (half the channels for y, half for x) plus a learned vector per level.

    The level embedding tells the encoder's attention which map a token came from, since
    tokens of all levels share one flattened sequence. Raises ValueError for an odd ``dim``
    or ``dim`` not a multiple of 4, or ``levels`` < 1.
    """

    def __init__(self, dim: int, levels: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if dim % 4 or levels < 1:
            raise ValueError(f"positions: dim must be a multiple of 4 and levels >= 1, got {dim}, {levels}")
        self.dim, self.temperature = dim, temperature
        self.level_embedding = nn.Parameter(torch.empty(levels, dim))
        nn.init.normal_(self.level_embedding)

    def forward(self, masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level ``(B, H_l, W_l)`` masks -> per level ``(B, H_l * W_l, dim)`` embeddings.

        Raises ValueError for more levels than it was built for.
        """
        if len(masks) > len(self.level_embedding):
            raise ValueError(f"positions: built for {len(self.level_embedding)} levels, got {len(masks)}")
        positions = []
        for level, mask in enumerate(masks):
            coords = pixel_coordinates(mask).flatten(1, 2)  # (B, HW, 2) as (y, x)
            embedded = sine_embedding(coords, self.dim // 2, self.temperature)  # (B, HW, D)
            positions.append(embedded + self.level_embedding[level])
        return positions
