"""From a detector's prediction to scored boxes in each original image's pixels.

A DETR-family detector with sigmoid classification scores every (query,
class) pair on its own, so -- as in Deformable-DETR and DINO -- the
detections of an image are its ``top_k`` pairs by ``σ(logit)`` over all
queries and classes, with no non-maximum suppression: one query may give
several classes. Only the classes the image's dataset annotates
(``valid_classes``) compete; the others are not scored for that image.

Boxes go from the model's frame (``cxcywh`` normalised to the padded
``S x S`` canvas, see :mod:`gemlab.models.detection.structures`) to corner
pixels of the original image by one factor per image:

    box_xyxy_pixels = box_canvas_xyxy · scale_b,
    scale_b = S / r_b = canvas pixels per unit ÷ the image's resize factor,

where r_b is the factor the image was resized by. With the letterbox (the
longer side resized to S, placed top-left) r_b = S / max(H_b, W_b), so
``scale_b = max(H_b, W_b)`` of the original image, and the top-left
placement needs no offset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchvision.ops import box_convert

from gemlab.models.detection.structures import Prediction


@torch.no_grad()
def detections(
    prediction: Prediction,
    valid_classes: torch.Tensor,
    scale: torch.Tensor | Sequence[float],
    top_k: int = 100,
    *,
    image_sizes: torch.Tensor | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Per image the ``top_k`` (query, class) pairs by sigmoid score among the image's valid classes.

    ``valid_classes`` is (B, C) bool, ``scale`` (B,) original pixels per
    canvas unit (see the module docstring). Each dict holds ``boxes`` (k, 4)
    xyxy pixels of the original image, ``scores`` (k,) in decreasing order
    and ``labels`` (k,) global class ids, all on the CPU; k = min(top_k,
    Q · valid classes of the image). ``image_sizes`` (B, 2) of (height,
    width) pixels, when given, clips the boxes to their image (without it,
    a box may reach into where the canvas padding was). Raises ValueError
    for ``top_k < 1`` or shapes that do not fit the prediction.
    """
    logits, boxes = prediction.logits, prediction.boxes  # (B, Q, C), (B, Q, 4)
    batch, queries, classes = logits.shape
    scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    if top_k < 1:
        raise ValueError(f"detections: top_k must be >= 1, got {top_k}")
    if tuple(valid_classes.shape) != (batch, classes) or len(scale) != batch:
        raise ValueError(
            f"detections: valid_classes must be ({batch}, {classes}) and scale ({batch},), "
            f"got {tuple(valid_classes.shape)} and {tuple(scale.shape)}"
        )
    if image_sizes is not None and tuple(image_sizes.shape) != (batch, 2):
        raise ValueError(f"detections: image_sizes must be ({batch}, 2), got {tuple(image_sizes.shape)}")
    scores = logits.float().sigmoid().cpu()
    corners = box_convert(boxes.float().cpu(), "cxcywh", "xyxy")  # (B, Q, 4) canvas units
    valid = valid_classes.bool().cpu()
    found = []
    for b in range(batch):
        flat = scores[b].masked_fill(~valid[b], -1.0).reshape(-1)  # (Q * C,), invalid below any score
        k = min(top_k, queries * int(valid[b].sum()))
        best, index = flat.topk(k)
        query, label = index // classes, index % classes
        box = corners[b, query] * scale[b]
        if image_sizes is not None:
            height, width = (float(v) for v in image_sizes[b])
            box[:, 0::2] = box[:, 0::2].clamp(0, width)  # x1, x2
            box[:, 1::2] = box[:, 1::2].clamp(0, height)  # y1, y2
        found.append({"boxes": box, "scores": best, "labels": label})
    return found


def to_domain_labels(found: list[dict[str, torch.Tensor]], local_to_global: Mapping[int, int]) -> None:
    """Rewrite each dict's global ``labels`` as the domain's own category ids, in place.

    ``local_to_global`` is the domain's entry of ``LabelSpace.local_to_global``.
    Raises ValueError naming a global id the domain does not hold (a
    detection of a class that was not valid for the image).
    """
    to_local = {g: local for local, g in local_to_global.items()}
    for item in found:
        unknown = sorted({int(g) for g in item["labels"]} - to_local.keys())
        if unknown:
            raise ValueError(f"detections: global class id(s) {unknown} are not in the domain's label space")
        item["labels"] = torch.tensor([to_local[int(g)] for g in item["labels"]], dtype=torch.long)
