"""Multi-scale deformable attention against a naive loop over queries, heads, levels and points."""

from __future__ import annotations

import pytest
import torch

from gemlab.models.detection.deformable import DeformableAttention

SHAPES = torch.tensor([[4, 5], [2, 3], [1, 2]])  # (height, width) per level
STARTS = torch.tensor([0, 20, 26])
TOKENS = 28


def _bilinear(level: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """``level`` (H, W, C) at (x, y) in [0, 1] of the map: align_corners=False, zero outside."""
    height, width, _ = level.shape
    px, py = x * width - 0.5, y * height - 0.5  # pixel i's centre is at (i + 0.5) / size
    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
    total = torch.zeros(level.shape[-1], dtype=level.dtype)
    for xi, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
        for yi, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
            if 0 <= xi < width and 0 <= yi < height:
                total = total + wx * wy * level[yi, xi]
    return total


def _naive(attention: DeformableAttention, query, reference, value, padding_mask) -> torch.Tensor:
    batch, queries, _ = query.shape
    heads, levels, points = attention.heads, attention.levels, attention.points
    head_dim = attention.dim // heads
    v = attention.value(value).masked_fill(padding_mask[..., None], 0.0)
    offsets = attention.offsets(query).view(batch, queries, heads, levels, points, 2)
    weights = attention.weights(query).view(batch, queries, heads, levels * points).softmax(-1)
    weights = weights.view(batch, queries, heads, levels, points)
    out = torch.zeros(batch, queries, heads * head_dim, dtype=value.dtype)
    for b in range(batch):
        for q in range(queries):
            for h in range(heads):
                acc = torch.zeros(head_dim, dtype=value.dtype)
                for lvl in range(levels):
                    height, width = SHAPES[lvl].tolist()
                    start = int(STARTS[lvl])
                    level = v[b, start : start + height * width, h * head_dim : (h + 1) * head_dim]
                    level = level.reshape(height, width, head_dim)
                    for p in range(points):
                        dx, dy = offsets[b, q, h, lvl, p].tolist()
                        ref = reference[b, q, lvl].tolist()
                        if len(ref) == 2:
                            x, y = ref[0] + dx / width, ref[1] + dy / height
                        else:
                            x = ref[0] + dx / points * ref[2] * 0.5
                            y = ref[1] + dy / points * ref[3] * 0.5
                        acc = acc + weights[b, q, h, lvl, p] * _bilinear(level, x, y)
                out[b, q, h * head_dim : (h + 1) * head_dim] = acc
    return attention.output(out)


def _attention_and_inputs(reference_dims: int):
    torch.manual_seed(0)
    attention = DeformableAttention(dim=8, heads=2, levels=3, points=2).double()
    with torch.no_grad():  # the initialisation zeroes these; random ones make the offsets and weights matter
        attention.offsets.weight.normal_(0.0, 0.5)
        attention.weights.weight.normal_(0.0, 0.5)
    query = torch.randn(2, 3, 8, dtype=torch.float64)
    value = torch.randn(2, TOKENS, 8, dtype=torch.float64)
    reference = torch.rand(2, 3, 3, reference_dims, dtype=torch.float64)
    if reference_dims == 4:
        reference[..., 2:] = reference[..., 2:] * 0.5 + 0.1
    padding_mask = torch.zeros(2, TOKENS, dtype=torch.bool)
    padding_mask[1, 15:20] = True
    padding_mask[1, 25] = True
    return attention, query, reference, value, padding_mask


@pytest.mark.parametrize("reference_dims", [2, 4])
def test_deformable_attention_matches_the_naive_loop(reference_dims):
    attention, query, reference, value, padding_mask = _attention_and_inputs(reference_dims)
    fast = attention(query, reference, value, SHAPES, STARTS, padding_mask)
    with torch.no_grad():
        slow = _naive(attention, query, reference, value, padding_mask)
    assert fast.shape == (2, 3, 8)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)


def test_padding_tokens_contribute_nothing():
    attention, query, reference, value, padding_mask = _attention_and_inputs(2)
    changed = value.clone()
    changed[padding_mask] = 100.0
    torch.testing.assert_close(
        attention(query, reference, value, SHAPES, STARTS, padding_mask),
        attention(query, reference, changed, SHAPES, STARTS, padding_mask),
    )


def test_initial_offsets_spread_the_heads_and_weights_are_uniform():
    attention = DeformableAttention(dim=8, heads=4, levels=2, points=3)
    star = attention.offsets.bias.view(4, 2, 3, 2)
    assert not torch.equal(star[0], star[1])  # each head its own direction
    torch.testing.assert_close(star[:, :, 2], 3 * star[:, :, 0])  # point p at distance p + 1
    assert not attention.weights.weight.any() and not attention.weights.bias.any()


def test_bad_shapes_are_refused():
    attention, query, reference, value, padding_mask = _attention_and_inputs(2)
    with pytest.raises(ValueError, match="reference"):
        attention(query, reference[..., :1], value, SHAPES, STARTS, padding_mask)
    with pytest.raises(ValueError, match="add up"):
        attention(query, reference, value[:, :-1], SHAPES, STARTS, padding_mask[:, :-1])
    with pytest.raises(ValueError, match="multiple of heads"):
        DeformableAttention(dim=10, heads=4, levels=1, points=1)
