"""Bipartite matching of predictions to ground truth (DETR's Hungarian matcher, Deformable-DETR's costs).

DETR (Carion et al., 2020, "End-to-End Object Detection with Transformers")
trains a set predictor by first finding the one-to-one assignment σ̂ of
queries to ground-truth objects of least total cost,

    σ̂ = argmin_σ Σ_i L_match(y_i, ŷ_σ(i)),

solved exactly by the Hungarian algorithm (here scipy's
``linear_sum_assignment``), and then supervising each query with the object
it got (and the rest as "no object"). The pair cost is the weighted sum

    L_match = λ_cls · C_cls + λ_L1 · ‖b − b̂‖₁ − λ_giou · GIoU(b, b̂),

with boxes b in ``(cx, cy, w, h)`` for the L1 term and corners for the
generalised IoU (Rezatofighi et al., 2019). Deformable-DETR (Zhu et al.,
2021) and DINO (Zhang et al., 2023) replace DETR's ``−p̂(c)`` class cost by
the focal-loss cost at the target class c, with p = σ(logit_c):

    C_cls = α (1 − p)^γ (−log p) − (1 − α) p^γ (−log(1 − p)),

the focal loss of calling the query positive for c minus that of calling it
negative (Lin et al., 2017, "Focal Loss for Dense Object Detection").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

from gemlab.models.detection.structures import DetectionTargets, Prediction


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """The (Q, n) focal class cost ``C_cls`` of query q for target j's class, from (Q, C) logits.

    ``−log p`` and ``−log(1 − p)`` are computed as ``softplus(−x)`` and
    ``softplus(x)``, which stay finite for any logit. Raises nothing.
    """
    logits = logits[:, labels].float()  # (Q, n)
    p = logits.sigmoid()
    positive = alpha * (1 - p) ** gamma * F.softplus(-logits)
    negative = (1 - alpha) * p**gamma * F.softplus(logits)
    return positive - negative


class HungarianMatcher:
    """One-to-one matching of each image's queries to its targets by least total ``L_match``.

    Raises ValueError for a negative cost weight or alpha outside [0, 1],
    or when every cost weight is zero (every assignment would tie).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_box: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ) -> None:
        weights = {"cost_class": cost_class, "cost_box": cost_box, "cost_giou": cost_giou, "gamma": gamma}
        negative = {name: value for name, value in weights.items() if not value >= 0}
        if negative:
            raise ValueError(f"HungarianMatcher: weights and gamma must be >= 0, got {negative}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"HungarianMatcher: alpha must be in [0, 1], got {alpha}")
        if cost_class == cost_box == cost_giou == 0:
            raise ValueError("HungarianMatcher: at least one cost weight must be > 0")
        self.cost_class, self.cost_box, self.cost_giou = cost_class, cost_box, cost_giou
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def costs(self, prediction: Prediction, targets: DetectionTargets) -> list[torch.Tensor]:
        """Per image the (Q, n_b) matrix of ``L_match`` between its queries and its targets (float32)."""
        matrices = []
        for b, (boxes, labels) in enumerate(zip(targets.boxes, targets.labels, strict=True)):
            predicted = prediction.boxes[b].float()  # (Q, 4) cxcywh
            if len(labels) == 0:
                matrices.append(predicted.new_zeros((len(predicted), 0)))
                continue
            boxes = boxes.to(predicted)  # (n, 4) cxcywh
            class_cost = focal_class_cost(prediction.logits[b], labels, self.alpha, self.gamma)
            box_cost = torch.cdist(predicted, boxes, p=1)
            giou = generalized_box_iou(box_convert(predicted, "cxcywh", "xyxy"), box_convert(boxes, "cxcywh", "xyxy"))
            matrices.append(self.cost_class * class_cost + self.cost_box * box_cost - self.cost_giou * giou)
        return matrices

    @torch.no_grad()
    def match(self, prediction: Prediction, targets: DetectionTargets) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image ``(query indices, target indices)``, two (min(Q, n_b),) long tensors on the CPU.

        Query indices come in increasing order; an image without targets
        gives two empty tensors. Raises ValueError when the batch sizes of
        ``prediction`` and ``targets`` differ, or a cost is NaN (a NaN logit
        or box upstream).
        """
        if prediction.logits.shape[0] != len(targets):
            raise ValueError(f"matcher: {prediction.logits.shape[0]} predicted images but {len(targets)} targets")
        matches = []
        for matrix in self.costs(prediction, targets):
            matrix = matrix.cpu()
            if matrix.isnan().any():
                raise ValueError("matcher: NaN in the matching cost (NaN logits or boxes in the prediction)")
            queries, objects = linear_sum_assignment(matrix.numpy())
            matches.append((torch.as_tensor(queries, dtype=torch.long), torch.as_tensor(objects, dtype=torch.long)))
        return matches
