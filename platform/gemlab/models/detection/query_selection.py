"""DINO's two-stage mixed query selection: the encoder proposes the decoder's anchor boxes.

    selection = QuerySelection(dim, num_classes, num_queries=300)
    chosen = selection(memory, memory_mask, shapes)
    chosen.anchors        # (B, Q, 4) inverse-sigmoid, detached: the matching queries' anchors
    chosen.proposals      # Prediction for the encoder's (two-stage) loss

Every encoder token proposes one box: a grid box at the token's centre,
sized ``0.05 · 2^level`` (coarser levels propose bigger boxes), refined by a
box head on the projected memory. The ``num_queries`` tokens whose best
class logit is highest become the anchors. Only the positions come from
the encoder ("mixed" selection): the content queries stay learned
embeddings (:mod:`gemlab.models.detection.queries`), because an encoder
feature picked for one object is a poor, ambiguous content vector.
Padding tokens and grid boxes too close to the canvas edge are never chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gemlab.models.detection.encoder import token_centres, token_levels
from gemlab.models.detection.heads import box_head, class_head, inverse_sigmoid
from gemlab.models.detection.structures import Prediction

BASE_SIZE = 0.05  # grid box side at the finest level (DINO's)
EDGE = 0.01  # a grid box whose coordinates leave (EDGE, 1 - EDGE) is not a valid proposal


@dataclass
class Selected:
    """The anchors of the matching queries and the proposals they came from."""

    anchors: torch.Tensor  # (B, Q, 4) inverse-sigmoid space, detached
    proposals: Prediction  # logits (B, Q, C), boxes (B, Q, 4) in [0, 1], with gradients (two-stage loss)


def grid_proposals(shapes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token's grid box (S, 4) in inverse-sigmoid space and whether it is valid (S,) bool.

    Invalid boxes are set to 0 (a centred half-canvas box) rather than ∞, so that selecting one -- only
    possible when an image has fewer valid tokens than queries -- yields finite boxes and gradients.
    """
    centres = token_centres(shapes)  # (S, 2)
    side = BASE_SIZE * 2.0 ** token_levels(shapes).to(centres.dtype)  # (S,)
    boxes = torch.cat([centres, side[:, None].expand(-1, 2)], dim=-1)  # (S, 4) cxcywh
    valid = ((boxes > EDGE) & (boxes < 1 - EDGE)).all(dim=-1)
    return inverse_sigmoid(boxes).masked_fill(~valid[:, None], 0.0), valid


class QuerySelection(nn.Module):
    """Encoder output projection, class head and box head on the memory, and the top-k choice.

    Raises ValueError for sizes < 1.
    """

    def __init__(self, dim: int, num_classes: int, num_queries: int) -> None:
        super().__init__()
        if min(dim, num_classes, num_queries) < 1:
            raise ValueError(f"query selection: sizes must be >= 1, got {dim}, {num_classes}, {num_queries}")
        self.project = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.classes = class_head(dim, num_classes)
        self.boxes = box_head(dim)
        self.num_queries = num_queries

    def forward(self, memory: torch.Tensor, memory_mask: torch.Tensor, shapes: torch.Tensor) -> Selected:
        """``memory`` (B, S, D), ``memory_mask`` (B, S) True at padding, ``shapes`` (L, 2).

        Raises ValueError when there are fewer tokens than queries.
        """
        _, tokens, dim = memory.shape
        if tokens < self.num_queries:
            raise ValueError(
                f"query selection: {self.num_queries} queries but only {tokens} encoder tokens; "
                f"use fewer queries or larger images"
            )
        grid, grid_valid = grid_proposals(shapes)  # (S, 4), (S,)
        valid = grid_valid[None] & ~memory_mask  # (B, S)
        projected = self.norm(self.project(memory.masked_fill(~valid[..., None], 0.0)))  # (B, S, D)
        logits = self.classes(projected)  # (B, S, C)
        score = logits.max(dim=-1).values.masked_fill(~valid, float("-inf"))
        top = score.topk(self.num_queries, dim=1).indices  # (B, Q)
        chosen = torch.gather(projected, 1, top[..., None].expand(-1, -1, dim))  # (B, Q, D)
        chosen_logits = torch.gather(logits, 1, top[..., None].expand(-1, -1, logits.shape[-1]))
        coords = self.boxes(chosen) + grid[top]  # (B, Q, 4) inverse-sigmoid
        return Selected(anchors=coords.detach(), proposals=Prediction(chosen_logits, coords.sigmoid()))
