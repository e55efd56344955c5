"""Multi-scale deformable attention (Deformable DETR, Eq. 2/3), in plain PyTorch.

    attention = DeformableAttention(dim=256, heads=8, levels=3, points=4)
    y = attention(query, reference, value, shapes, starts, padding_mask)   # (B, Q, D)

Each query looks at ``levels * points`` sampled locations per head instead of
every token: for head h, level l, point p it samples the value map of level l
bilinearly at ``reference + offset[h, l, p]`` and averages the samples with
weights softmaxed over the level-point pairs,

    y_q = W_o concat_h( sum_{l,p} A[q,h,l,p] * V_h^l( r_q^l + Δ[q,h,l,p] ) ).

The offsets and weights are linear functions of the query. Sampling uses
``F.grid_sample`` (``align_corners=False``, zeros outside the map) one level
at a time, so no compiled extension is needed: slower than the CUDA kernel at
DINO's scale, fast enough at the few hundred tokens of a CPU run, and the
same maths.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class DeformableAttention(nn.Module):
    """``heads`` heads sampling ``points`` locations on each of ``levels`` feature maps.

    Raises ValueError unless ``dim`` is a multiple of ``heads`` and every size is >= 1.
    """

    def __init__(self, dim: int, heads: int, levels: int, points: int) -> None:
        super().__init__()
        if min(dim, heads, levels, points) < 1 or dim % heads:
            raise ValueError(
                f"deformable attention: need sizes >= 1 and dim a multiple of heads, got "
                f"dim={dim}, heads={heads}, levels={levels}, points={points}"
            )
        self.dim, self.heads, self.levels, self.points = dim, heads, levels, points
        self.offsets = nn.Linear(dim, heads * levels * points * 2)
        self.weights = nn.Linear(dim, heads * levels * points)
        self.value = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Offsets start as a fixed star: head h looks along direction 2πh/H, point p at distance p+1
        # (in feature-map cells), so before training the heads already cover different neighbourhoods.
        nn.init.zeros_(self.offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        star = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (H, 2)
        star = star / star.abs().max(dim=-1, keepdim=True).values
        star = star[:, None, None, :].repeat(1, self.levels, self.points, 1)  # (H, L, P, 2)
        star = star * torch.arange(1, self.points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.offsets.bias.copy_(star.reshape(-1))
        # Uniform attention over the samples at the start.
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)
        for linear in (self.value, self.output):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference: torch.Tensor,
        value: torch.Tensor,
        shapes: torch.Tensor,
        starts: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``query`` (B, Q, D); ``reference`` (B, Q, L, 2) points or (B, Q, L, 4) boxes in [0, 1];
        ``value`` (B, S, D), the L maps flattened row-major one after another; ``shapes`` (L, 2) long
        (height, width) of each map; ``starts`` (L,) long, where each map begins in ``value``;
        ``padding_mask`` (B, S) True where a value token is padding (it contributes zero).

        With point references an offset is in cells of its level's map; with box references it is
        scaled by half the box size divided by ``points``, so the samples stay in and around the box.
        Returns (B, Q, D). Raises ValueError for a reference of another shape or shapes that do not
        add up to S.
        """
        batch, num_queries, _ = query.shape
        tokens = value.shape[1]
        heads, levels, points = self.heads, self.levels, self.points
        if reference.dim() != 4 or reference.shape[2] != levels or reference.shape[3] not in (2, 4):
            raise ValueError(
                f"deformable attention: reference must be (B, Q, {levels}, 2 or 4), got {tuple(reference.shape)}"
            )
        if int((shapes[:, 0] * shapes[:, 1]).sum()) != tokens:
            raise ValueError(f"deformable attention: level shapes {shapes.tolist()} do not add up to {tokens} tokens")

        v = self.value(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(batch, tokens, heads, self.dim // heads)  # (B, S, H, Dh)

        offsets = self.offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(dim=-1).view(batch, num_queries, heads, levels, points)

        if reference.shape[-1] == 2:
            size_xy = torch.stack([shapes[:, 1], shapes[:, 0]], dim=-1).to(offsets.dtype)  # (L, 2) as (W, H)
            locations = reference[:, :, None, :, None, :] + offsets / size_xy[None, None, None, :, None, :]
        else:
            centre, size = reference[..., :2], reference[..., 2:]  # (B, Q, L, 2) each
            locations = centre[:, :, None, :, None, :] + offsets / points * size[:, :, None, :, None, :] * 0.5
        return self.output(sample_levels(v, shapes, starts, locations, weights))


def sample_levels(
    value: torch.Tensor, shapes: torch.Tensor, starts: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The attention's core: bilinear samples of every level, weighted and summed.

    ``value`` (B, S, H, Dh); ``locations`` (B, Q, H, L, P, 2) as (x, y) in [0, 1] of each map
    (0 and 1 are the outer edges of its border pixels, i.e. ``align_corners=False``); ``weights``
    (B, Q, H, L, P). Returns (B, Q, H*Dh). Raises nothing.
    """
    batch, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = locations.shape
    grids = 2 * locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for level in range(levels):
        height, width = int(shapes[level, 0]), int(shapes[level, 1])
        start = int(starts[level])
        level_value = value[:, start : start + height * width]  # (B, HW, H, Dh)
        level_value = level_value.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, height, width)
        grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, num_queries, points, 2)
        sampled.append(F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2)  # (B*H, Dh, Q, L, P)
    attention = weights.transpose(1, 2).reshape(batch * heads, 1, num_queries, levels, points)
    out = (stacked * attention).sum(dim=(-1, -2))  # (B*H, Dh, Q)
    return out.view(batch, heads * head_dim, num_queries).transpose(1, 2)
