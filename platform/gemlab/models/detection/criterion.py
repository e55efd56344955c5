"""The detector's set loss: focal classification, L1 and GIoU boxes, over every supervised prediction.

Per prediction set (one decoder layer, the encoder proposals, or one
layer's denoising queries) the loss is, as in DETR (Carion et al., 2020)
with Deformable-DETR's focal classification (Zhu et al., 2021):

    L = λ_cls · Σ_{b,q,c} m_bc · FL(p_bqc, y_bqc) / N
      + λ_L1  · Σ_{matched (q, j)} ‖b_j − b̂_q‖₁ / N
      + λ_giou · Σ_{matched (q, j)} (1 − GIoU(b_j, b̂_q)) / N,

where FL is the sigmoid focal loss of Lin et al. (2017, "Focal Loss for
Dense Object Detection"),

    FL(p_t) = −α_t (1 − p_t)^γ log p_t,   p_t = p if y = 1 else 1 − p,
    α_t = α if y = 1 else 1 − α,

y_bqc = 1 only for the class of the object query q was matched to, and
N = max(1, number of ground-truth boxes in the batch) (DETR's normaliser).
The mask m_bc = ``valid_classes[b, c]`` is the label-space rule of
multi-dataset training: a class image b's dataset does not annotate is
neither a positive nor a negative there, so its logits get no loss at all.

Which predictions are supervised, and how:

- the final decoder layer and every intermediate one (DETR's auxiliary
  losses), each matched on its own by the Hungarian matcher;
- the encoder's proposals (DINO's two-stage loss; Zhang et al., 2023,
  "DINO: DETR with Improved DeNoising Anchor Boxes"), matched and
  supervised like a decoder layer;
- the denoising queries of every decoder layer (DINO's contrastive
  denoising), without matching: positive copy i of object i is supervised to
  object i (class and boxes), its negative copy to "no object" (class loss
  only, all-zero targets), and padding slots (i ≥ n_b) not at all. Each of
  the ``groups`` groups repeats the batch's objects, so these terms are
  normalised by ``groups · N`` -- one group weighs as much as one layer.

Each term (``class``, ``box``, ``giou``) is summed over all these sets and
already weighted. N is this process's count: under data parallelism each
rank normalises by its own boxes (no all-reduce), which weighs images
slightly differently across ranks but keeps the loss a local function.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from gemlab.models.detection.matcher import HungarianMatcher
from gemlab.models.detection.structures import DenoisingLayout, DetectionOutput, DetectionTargets, Prediction

DEFAULT_WEIGHTS: Mapping[str, float] = {"class": 1.0, "box": 5.0, "giou": 2.0}

Matches = list[tuple[torch.Tensor, torch.Tensor]]


def _gather(
    targets: DetectionTargets, objects: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (M,) labels and (M, 4) boxes of ``objects[b]`` (target indices of image b), concatenated, on ``device``."""
    labels = [targets.labels[b][o.to(targets.labels[b].device)].to(device) for b, o in enumerate(objects)]
    boxes = [targets.boxes[b][o.to(targets.boxes[b].device)].to(device) for b, o in enumerate(objects)]
    return torch.cat(labels).long(), torch.cat(boxes).reshape(-1, 4)


class LossTerms(dict[str, torch.Tensor]):
    """The weighted loss terms by name (a plain dict to the caller) with the final layer's matches.

    ``matches[b] = (query indices, target indices)`` of image b in the final
    decoder layer: what a class-level router needs to know which ground-truth
    class each matched query got.
    """

    def __init__(self, terms: Mapping[str, torch.Tensor], matches: Matches) -> None:
        super().__init__(terms)
        self.matches = matches

    @property
    def total(self) -> torch.Tensor:
        """The sum of the terms: the task loss to back-propagate."""
        return torch.stack(list(self.values())).sum()


class DetectionCriterion(nn.Module):
    """The set loss of a DETR-family detector (see the module docstring for the equations).

    ``weights`` maps ``class``, ``box`` and ``giou`` to λ_cls, λ_L1 and
    λ_giou (missing names take :data:`DEFAULT_WEIGHTS`). Raises ValueError
    for ``num_classes < 1``, an unknown or negative weight, a negative gamma
    or alpha outside [0, 1].
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher | None = None,
        weights: Mapping[str, float] | None = None,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"DetectionCriterion: num_classes must be >= 1, got {num_classes}")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise ValueError(f"DetectionCriterion: unknown weight(s) {unknown}; expected {sorted(DEFAULT_WEIGHTS)}")
        self.weights = {**DEFAULT_WEIGHTS, **weights}
        if not all(value >= 0 for value in self.weights.values()) or not gamma >= 0:
            raise ValueError(f"DetectionCriterion: weights and gamma must be >= 0, got {self.weights}, {gamma}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"DetectionCriterion: alpha must be in [0, 1], got {alpha}")
        self.num_classes = num_classes
        self.matcher = matcher if matcher is not None else HungarianMatcher(alpha=alpha, gamma=gamma)
        self.alpha, self.gamma = alpha, gamma

    def forward(self, output: DetectionOutput, targets: DetectionTargets) -> LossTerms:
        """The weighted ``class``, ``box`` and ``giou`` terms summed over every supervised prediction.

        Raises ValueError when a prediction's shape does not fit the batch
        or ``num_classes``, or the denoising predictions do not fit their
        layout (no layout, a query count other than ``layout.size``, or an
        image with more objects than ``layout.max_objects``).
        """
        self._check(output.final, targets)
        count = sum(len(labels) for labels in targets.labels)
        normaliser = max(count, 1)
        totals = {name: output.final.logits.new_zeros((), dtype=torch.float32) for name in DEFAULT_WEIGHTS}
        final_matches: Matches = []
        matched = [output.final, *output.intermediate]
        if output.proposals is not None:
            matched.append(output.proposals)
        for number, prediction in enumerate(matched):
            self._check(prediction, targets)
            matches = self.matcher.match(prediction, targets)
            if number == 0:
                final_matches = matches
            self._add(totals, self._matched_terms(prediction, targets, matches, normaliser))
        if output.denoising:
            layout = self._denoising_layout(output, targets)
            for prediction in output.denoising:
                self._check(prediction, targets, queries=layout.size)
                self._add(totals, self._denoising_terms(prediction, targets, layout, normaliser * layout.groups))
        terms = {name: self.weights[name] * value for name, value in totals.items()}
        return LossTerms(terms, final_matches)

    # --- the terms of one prediction set -----------------------------------------------------------------------

    def _matched_terms(
        self, prediction: Prediction, targets: DetectionTargets, matches: Matches, normaliser: float
    ) -> dict[str, torch.Tensor]:
        """Unweighted terms of a set supervised through ``matches``; every query enters the class loss."""
        device = prediction.logits.device
        batch = torch.cat([torch.full_like(queries, b) for b, (queries, _) in enumerate(matches)]).to(device)
        queries = torch.cat([queries for queries, _ in matches]).to(device)
        labels, boxes = _gather(targets, [objects for _, objects in matches], device)
        weight = torch.ones(prediction.logits.shape[:2], dtype=torch.bool, device=device)  # (B, Q) every query
        return {
            "class": self._class_loss(prediction.logits, targets, batch, queries, labels, weight) / normaliser,
            **self._box_terms(prediction.boxes[batch, queries], boxes, normaliser),
        }

    def _denoising_terms(
        self, prediction: Prediction, targets: DetectionTargets, layout: DenoisingLayout, normaliser: float
    ) -> dict[str, torch.Tensor]:
        """Unweighted terms of one layer's denoising queries: positives to their object, negatives to nothing."""
        device = prediction.logits.device
        batch, queries, objects = [], [], []
        weight = torch.zeros(prediction.logits.shape[:2], dtype=torch.bool, device=device)  # (B, Q_dn) supervised
        for b, labels in enumerate(targets.labels):
            n = len(labels)
            positives = layout.positive_slots(n).to(device)  # (groups * n,)
            weight[b, positives] = True
            weight[b, layout.negative_slots(n).to(device)] = True
            batch.append(torch.full_like(positives, b))
            queries.append(positives)
            objects.append(torch.arange(n).repeat(layout.groups))  # object i of every group
        batch_t, queries_t = torch.cat(batch), torch.cat(queries)
        labels, boxes = _gather(targets, objects, device)
        return {
            "class": self._class_loss(prediction.logits, targets, batch_t, queries_t, labels, weight) / normaliser,
            **self._box_terms(prediction.boxes[batch_t, queries_t], boxes, normaliser),
        }

    def _class_loss(
        self,
        logits: torch.Tensor,  # (B, Q, C)
        targets: DetectionTargets,
        batch: torch.Tensor,  # (M,) image of each positive
        queries: torch.Tensor,  # (M,) query of each positive
        labels: torch.Tensor,  # (M,) class of each positive
        weight: torch.Tensor,  # (B, Q) bool: queries that enter the loss at all
    ) -> torch.Tensor:
        """``Σ m_bc · FL`` over the supervised queries: one-hot at the positives, zeros elsewhere (unnormalised)."""
        mask = weight.unsqueeze(2) & targets.valid_classes.to(logits.device).unsqueeze(1)  # (B, Q, C)
        # Masked logits are replaced before the loss, and the loss after it: not a product with the mask, so that
        # a masked logit of ±inf gives neither a NaN loss nor a NaN gradient (it gets exactly zero).
        logits = torch.where(mask, logits.float(), 0.0)
        onehot = torch.zeros_like(logits)
        onehot[batch, queries, labels.to(logits.device)] = 1.0
        loss = sigmoid_focal_loss(logits, onehot, alpha=self.alpha, gamma=self.gamma, reduction="none")
        return torch.where(mask, loss, 0.0).sum()

    def _box_terms(self, predicted: torch.Tensor, boxes: torch.Tensor, normaliser: float) -> dict[str, torch.Tensor]:
        """Unweighted L1 (cxcywh) and GIoU losses of (M, 4) matched pairs, divided by ``normaliser``."""
        predicted, boxes = predicted.float(), boxes.to(predicted.device).float()
        if len(boxes) == 0:
            zero = predicted.sum() * 0  # keeps the graph (and so every parameter's gradient, zero) alive
            return {"box": zero, "giou": zero}
        l1 = (predicted - boxes).abs().sum()
        corners = box_convert(predicted, "cxcywh", "xyxy"), box_convert(boxes, "cxcywh", "xyxy")
        giou = generalized_box_iou_loss(*corners, reduction="sum")
        return {"box": l1 / normaliser, "giou": giou / normaliser}

    # --- checks ------------------------------------------------------------------------------------------------

    def _check(self, prediction: Prediction, targets: DetectionTargets, queries: int | None = None) -> None:
        logits, boxes = prediction.logits, prediction.boxes
        batch = len(targets)
        if logits.dim() != 3 or logits.shape[0] != batch or logits.shape[2] != self.num_classes:
            wanted = f"(B={batch}, Q, C={self.num_classes})"
            raise ValueError(f"criterion: logits must be {wanted}, got {tuple(logits.shape)}")
        if boxes.shape != (*logits.shape[:2], 4):
            raise ValueError(f"criterion: boxes must be {(*logits.shape[:2], 4)}, got {tuple(boxes.shape)}")
        if tuple(targets.valid_classes.shape) != (batch, self.num_classes):
            raise ValueError(
                f"criterion: valid_classes must be ({batch}, {self.num_classes}), "
                f"got {tuple(targets.valid_classes.shape)}"
            )
        if queries is not None and logits.shape[1] != queries:
            raise ValueError(f"criterion: {logits.shape[1]} denoising queries but the layout has {queries}")

    @staticmethod
    def _denoising_layout(output: DetectionOutput, targets: DetectionTargets) -> DenoisingLayout:
        layout = output.layout
        if layout is None:
            raise ValueError("criterion: denoising predictions without a DenoisingLayout")
        most = max((len(labels) for labels in targets.labels), default=0)
        if most > layout.max_objects:
            raise ValueError(f"criterion: an image has {most} objects but the layout holds {layout.max_objects}")
        return layout

    @staticmethod
    def _add(totals: dict[str, torch.Tensor], terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            totals[name] = totals[name] + value
