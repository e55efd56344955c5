"""DINO's contrastive denoising queries: noised copies of the ground truth the decoder learns to repair.

    denoising = ContrastiveDenoising(num_classes, dim, groups=5, label_noise=0.5, box_noise=1.0)
    queries = denoising(targets, num_queries=300)     # None when the batch has no objects
    # decoder input: [queries.content | matching content], attention_mask = queries.attention_mask

Matching is unstable early in training (a query's target changes from step
to step); denoising queries have fixed targets, so they teach box repair
directly. Each of ``groups`` groups holds a *positive* copy of every object,
its box moved a little (it must be reconstructed), and a *negative* copy,
moved further (it must be called "no object": the contrast that teaches the
model to reject near-duplicates). With λ = ``box_noise`` and (w, h) the
box size, every corner moves by ``±u·λ·(w/2, h/2)`` per coordinate, with
u ~ U[0, 1) for positives and u ~ U[1, 2) for negatives; corners are
re-ordered afterwards, so a box turned inside out stays a box. A copy's
label is replaced by a random class with probability ``label_noise`` (the
flip probability itself: DINO's ``label_noise_ratio`` of 0.5 flips with 0.25).

The decoder sees all queries in one sequence; the attention mask keeps
the matching queries from seeing any denoising query (they would see the
answers) and each denoising group from seeing the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import box_convert

from gemlab.models.detection.heads import inverse_sigmoid
from gemlab.models.detection.structures import DenoisingLayout, DetectionTargets


@dataclass
class DenoisingQueries:
    """The denoising part of the decoder input, laid out as ``layout`` says, and the whole sequence's mask."""

    content: torch.Tensor  # (B, N_dn, D) label embeddings; zero at padding slots
    anchors: torch.Tensor  # (B, N_dn, 4) noised boxes in inverse-sigmoid space; zero at padding slots
    attention_mask: torch.Tensor  # (N_dn + Q, N_dn + Q) bool, True = may not attend
    layout: DenoisingLayout


def attention_mask(layout: DenoisingLayout, num_queries: int, device: torch.device | None = None) -> torch.Tensor:
    """(N_dn + Q, N_dn + Q) bool, True = blocked: matching queries see no denoising query, groups see only themselves.

    Matching queries see each other; denoising queries see their own group and every matching query.
    Raises nothing.
    """
    size, block = layout.size, 2 * layout.max_objects
    mask = torch.zeros(size + num_queries, size + num_queries, dtype=torch.bool, device=device)
    mask[size:, :size] = True
    for group in range(layout.groups):
        rows = slice(group * block, (group + 1) * block)
        mask[rows, : group * block] = True
        mask[rows, (group + 1) * block : size] = True
    return mask


def noised_boxes(boxes: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
    """``boxes`` (..., 4) cxcywh moved corner by corner; ``negative`` (...) bool marks the far-noised copies.

    Returns (..., 4) cxcywh in [0, 1]. Raises nothing.
    """
    corners = box_convert(boxes, "cxcywh", "xyxy")
    half = torch.cat([boxes[..., 2:], boxes[..., 2:]], dim=-1) / 2  # (w/2, h/2, w/2, h/2)
    sign = torch.randint_like(corners, 0, 2) * 2 - 1
    magnitude = torch.rand_like(corners) + negative[..., None].to(corners.dtype)  # [0, 1) or [1, 2)
    moved = (corners + sign * magnitude * half * scale).clamp(0.0, 1.0)
    low = torch.minimum(moved[..., :2], moved[..., 2:])
    high = torch.maximum(moved[..., :2], moved[..., 2:])
    return box_convert(torch.cat([low, high], dim=-1), "xyxy", "cxcywh")


def query_classes(targets: DetectionTargets, layout: DenoisingLayout | None, num_queries: int) -> torch.Tensor:
    """(B, N_dn + Q) long: the class of the object each denoising positive copies, -1 for every other query.

    The class is the object's true one, not the label the positive's content embeds (which label
    noise may have flipped). Negatives, padding slots and the ``num_queries`` matching queries get
    -1: their class is not known before matching. ``layout`` None means no denoising queries.
    Raises nothing.
    """
    size = 0 if layout is None else layout.size
    device = targets.valid_classes.device
    classes = torch.full((len(targets), size + num_queries), -1, dtype=torch.long, device=device)
    if layout is not None:
        for b, labels in enumerate(targets.labels):
            slots = layout.positive_slots(len(labels)).to(device)  # group by group, objects in order
            classes[b, slots] = labels.to(device=device, dtype=torch.long).repeat(layout.groups)
    return classes


class ContrastiveDenoising(nn.Module):
    """Builds the denoising queries of a batch; ``labels`` embeds a class as a query's content.

    ``groups`` = 0 turns denoising off. Raises ValueError for ``num_classes`` < 1, ``groups`` < 0,
    ``label_noise`` outside [0, 1] or ``box_noise`` < 0.
    """

    def __init__(self, num_classes: int, dim: int, groups: int, label_noise: float, box_noise: float) -> None:
        super().__init__()
        if num_classes < 1 or groups < 0 or not 0.0 <= label_noise <= 1.0 or box_noise < 0:
            raise ValueError(
                f"denoising: need num_classes >= 1, groups >= 0, label_noise in [0, 1], box_noise >= 0; got "
                f"{num_classes}, {groups}, {label_noise}, {box_noise}"
            )
        self.labels = nn.Embedding(num_classes, dim)
        self.num_classes, self.groups = num_classes, groups
        self.label_noise, self.box_noise = label_noise, box_noise

    def forward(self, targets: DetectionTargets, num_queries: int) -> DenoisingQueries | None:
        """The batch's denoising queries, or None when it has no objects (or ``groups`` is 0).

        Raises nothing.
        """
        counts = [len(labels) for labels in targets.labels]
        most = max(counts, default=0)
        if most == 0 or self.groups == 0:
            return None
        device = targets.valid_classes.device
        batch, copies = len(counts), 2 * self.groups
        labels = torch.zeros(batch, most, dtype=torch.long, device=device)
        boxes = torch.zeros(batch, most, 4, device=device)
        present = torch.zeros(batch, most, dtype=torch.bool, device=device)
        for b, n in enumerate(counts):
            labels[b, :n], boxes[b, :n], present[b, :n] = targets.labels[b], targets.boxes[b], True

        # (B, 2G, M): copy k is group k // 2, the negative one when k is odd -- the layout's order
        labels = labels[:, None].expand(batch, copies, most)
        boxes = boxes[:, None].expand(batch, copies, most, 4)
        present = present[:, None].expand(batch, copies, most)
        negative = (torch.arange(copies, device=device) % 2 == 1)[None, :, None].expand(batch, copies, most)

        flip = torch.rand(labels.shape, device=device) < self.label_noise
        labels = torch.where(flip, torch.randint_like(labels, self.num_classes), labels)
        anchors = inverse_sigmoid(noised_boxes(boxes, negative, self.box_noise))
        keep = present[..., None].to(anchors.dtype)
        content = self.labels(labels) * keep  # (B, 2G, M, D)
        layout = DenoisingLayout(groups=self.groups, max_objects=most)
        return DenoisingQueries(
            content=content.reshape(batch, layout.size, -1),
            anchors=(anchors * keep).reshape(batch, layout.size, 4),
            attention_mask=attention_mask(layout, num_queries, device),
            layout=layout,
        )
