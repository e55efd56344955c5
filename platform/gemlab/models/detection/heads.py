"""Prediction heads and the anchor space they refine boxes in.

    heads = PredictionHeads(dim=256, num_classes=80, layers=6)
    logits = heads.classes[i](hidden)                  # (B, Q, C)
    delta = heads.boxes[i](hidden)                     # (B, Q, 4), added to inverse_sigmoid(box)

Boxes are refined additively in inverse-sigmoid ("anchor") space, where
they are unbounded, and mapped back to [0, 1] by the sigmoid. Class heads
start at the focal-loss prior (every class at probability 0.01), so the
first steps are not swamped by the loss of thousands of easy negatives; box
heads start at zero, so an untrained layer keeps its reference box.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

FOCAL_PRIOR = 0.01


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 - x)), with x clamped to [eps, 1 - eps] so that boxes at the canvas edge stay finite."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class MLP(nn.Module):
    """``layers`` linear layers with ReLU between them: ``inputs -> hidden ... -> outputs``."""

    def __init__(self, inputs: int, hidden: int, outputs: int, layers: int) -> None:
        super().__init__()
        sizes = [inputs] + [hidden] * (layers - 1) + [outputs]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def class_head(dim: int, num_classes: int) -> nn.Linear:
    """A linear class head whose bias is the focal prior ``-log((1 - π) / π)``, π = 0.01."""
    head = nn.Linear(dim, num_classes)
    nn.init.constant_(head.bias, -math.log((1 - FOCAL_PRIOR) / FOCAL_PRIOR))
    return head


def box_head(dim: int) -> MLP:
    """A 3-layer MLP predicting a 4-d anchor-space delta, last layer zero (no move before training)."""
    head = MLP(dim, dim, 4, 3)
    nn.init.zeros_(head.layers[-1].weight)
    nn.init.zeros_(head.layers[-1].bias)
    return head


class PredictionHeads(nn.Module):
    """One class head and one box head per decoder layer (DINO's per-layer heads with box refinement).

    Raises ValueError for sizes < 1.
    """

    def __init__(self, dim: int, num_classes: int, layers: int) -> None:
        super().__init__()
        if min(dim, num_classes, layers) < 1:
            raise ValueError(f"heads: dim, num_classes and layers must be >= 1, got {dim}, {num_classes}, {layers}")
        self.classes = nn.ModuleList(class_head(dim, num_classes) for _ in range(layers))
        self.boxes = nn.ModuleList(box_head(dim) for _ in range(layers))
