"""The values a detector exchanges with its loss, its evaluator and the engine.

Coordinates: every box inside the model is ``(cx, cy, w, h)`` normalised to
the *padded canvas* -- the square ``S x S`` tensor an image is letterboxed
into (resized so its longer side is ``S``, placed top-left, padding to the
right and below). Normalising to the canvas rather than to each image's
unpadded region keeps one coordinate frame for a whole batch, so the
deformable attention needs no per-image valid ratios; the padding is
excluded from attention by the pixel mask instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DetectionTargets:
    """One batch's ground truth.

    ``valid_classes[b, c]`` says whether image b's dataset annotates global
    class c. A class its dataset never annotates is neither a positive nor a
    negative for that image (the label-space rule of multi-dataset training:
    an unannotated car in a traffic-sign dataset is not background).
    """

    boxes: list[torch.Tensor]  # per image (n_i, 4) cxcywh on the canvas, in [0, 1]
    labels: list[torch.Tensor]  # per image (n_i,) long, the mixture's global class ids
    valid_classes: torch.Tensor  # (B, C) bool

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class DenoisingLayout:
    """Where the contrastive denoising queries sit in the decoder's query sequence.

    The sequence is ``[denoising queries | matching queries]``. Denoising has
    ``groups`` groups of ``2 * max_objects`` queries; in group g, query
    ``g * 2 * max_objects + i`` is the *positive* (lightly noised) copy of
    ground-truth object i, and ``g * 2 * max_objects + max_objects + i`` its
    *negative* (noised further, to be predicted as no object). Slots with
    ``i >= n_b`` (image b has fewer objects) are padding: supervised by
    nothing.
    """

    groups: int
    max_objects: int

    @property
    def size(self) -> int:
        """Denoising queries in the sequence (before the matching queries)."""
        return self.groups * 2 * self.max_objects

    def positive_slots(self, count: int) -> torch.Tensor:
        """The ``(groups * count,)`` query indices of the positives of objects ``0..count-1``, group by group."""
        starts = torch.arange(self.groups).unsqueeze(1) * 2 * self.max_objects
        return (starts + torch.arange(count)).reshape(-1)

    def negative_slots(self, count: int) -> torch.Tensor:
        """The ``(groups * count,)`` query indices of the negatives of objects ``0..count-1``, group by group."""
        return self.positive_slots(count) + self.max_objects


@dataclass
class Prediction:
    """One set of predictions: class logits (before the sigmoid) and boxes."""

    logits: torch.Tensor  # (B, Q, C)
    boxes: torch.Tensor  # (B, Q, 4) cxcywh on the canvas, in [0, 1]


@dataclass
class DetectionOutput:
    """What a detector's forward returns.

    ``final`` are the last decoder layer's predictions for the matching
    queries; ``intermediate`` the earlier layers' (auxiliary losses);
    ``proposals`` the encoder's top-k proposals that became the anchors
    (two-stage loss); ``denoising`` every decoder layer's predictions for
    the denoising queries (training only), laid out as ``layout`` says.
    ``aux_losses`` are the routers' own losses summed over MoE layers,
    already weighted; ``routings`` one per MoE layer call.
    """

    final: Prediction
    intermediate: list[Prediction] = field(default_factory=list)
    proposals: Prediction | None = None
    denoising: list[Prediction] = field(default_factory=list)
    layout: DenoisingLayout | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    routings: list = field(default_factory=list)

    @property
    def aux_loss(self) -> torch.Tensor:
        return sum(self.aux_losses.values(), torch.zeros((), device=self.final.logits.device))
