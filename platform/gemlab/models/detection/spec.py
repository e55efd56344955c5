"""The detector as the model registry sees it: ``model=dino``, ``model=gem_dino``, ``model=gemgr_dino``.

One model, three placements of the experts (``experts_in``): ``none``
(Mixed-DINO, dense; with one domain, Single-DINO), ``ffn`` (every decoder
FFN an MoE layer of the run's router: GEM-DINO under ``router=gem``,
DINO-MoE under ``router=topk`` ...) and ``queries`` (GEMGR-DINO: each
expert's own object queries and prediction heads). The training loss is
always the detector's set loss; a router that brings its own
classification loss (DQRoute's reweighting) has no meaning here and is
refused by name.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gemlab.models.common import ModelParts, ModelSpec
from gemlab.models.detection.criterion import DetectionCriterion
from gemlab.models.detection.dino import build_dino
from gemlab.models.detection.matcher import HungarianMatcher

OPTIONS = (
    "experts_in",
    "backbone",
    "backbone_checkpoint",
    "dim",
    "hidden",
    "expert_hidden",
    "heads",
    "points",
    "encoder_layers",
    "decoder_layers",
    "num_queries",
    "dn_groups",
    "label_noise",
    "box_noise",
)


def build_detector(parts: ModelParts, **options: Any) -> nn.Module:
    """The configured DINO with its set criterion.

    Raises ValueError for a router that brings its own loss, and what :func:`build_dino` raises.
    """
    if parts.criterion is not None:
        raise ValueError("this router trains with its own classification loss, which a detector cannot use")
    criterion = DetectionCriterion(parts.num_classes, HungarianMatcher())
    return build_dino(ModelParts(parts.num_classes, parts.image_size, parts.moe, criterion), **options)


SPEC = ModelSpec(
    name="dino",
    options=OPTIONS,
    build=build_detector,
    task="detection",
    uses_experts=lambda options: options["experts_in"] != "none",
)
