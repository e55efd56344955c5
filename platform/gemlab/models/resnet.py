"""A ResNet-18 trunk (torchvision, no downloaded weights) with an MoE layer as expert heads.

The trunk's pooled 512-d feature goes through an MoE layer (residual) and a
linear classifier. Weights are random or read from a local checkpoint file
(``torch.load(weights_only=True)``); nothing is ever downloaded. The
trunk's width is fixed, so the only size a config sets is the experts'
hidden width.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18

from gemlab.models.common import (
    MakeHead,
    MakeMoELayer,
    ModelOutput,
    ModelSpec,
    classifier,
    classify,
    training_criterion,
)

FEATURES = 512


class MoEResNet(nn.Module):
    """``moe(512, hidden)`` builds the expert heads; ``criterion`` is the training loss (None: cross-entropy);
    ``alignment`` the feature-alignment term on the head's input (None: none).

    Raises FileNotFoundError for a missing checkpoint, RuntimeError for one that does not fit,
    and whatever ``moe`` raises. ``moe`` None leaves out the expert layer; ``head(512)`` (None: linear)
    is the router's classifier (DQRoute).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        moe: MakeMoELayer | None,
        criterion: nn.Module | None = None,
        alignment: nn.Module | None = None,
        head: MakeHead | None = None,
        hidden: int = 1024,
        checkpoint: str | Path | None = None,
    ) -> None:
        super().__init__()
        trunk = resnet18(weights=None)
        if checkpoint is not None:
            state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
            trunk.load_state_dict(state, strict=False)
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.experts = moe(FEATURES, hidden) if moe is not None else None
        self.head = classifier(FEATURES, num_classes, head)
        self.criterion = training_criterion(criterion)
        self.alignment = alignment

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 512) pooled trunk features: the router-free backbone of GEM's affinity."""
        return self.trunk(images)

    def trunk_names(self) -> tuple[str, ...]:
        """The ResNet-18 trunk, by name: what a pretrained file initialises and ``backbone_lr_scale`` scales."""
        return ("trunk",)

    def forward(
        self,
        images: torch.Tensor,
        *,
        domain: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        metadata: torch.Tensor | None = None,
    ) -> ModelOutput:
        features = self.trunk(images)  # (B, 512)
        routings: list = []
        pooled = features  # (B, 512): the head's input, and what alignment aligns
        if self.experts is not None:
            y, routing = self.experts(features, domain=domain, labels=labels, metadata=metadata)
            pooled, routings = features + y, [routing]
        return ModelOutput.collect(classify(self.head, pooled, routings, labels), routings, pooled)


SPEC = ModelSpec(
    name="resnet",
    options=("hidden",),
    build=lambda parts, **options: MoEResNet(
        num_classes=parts.num_classes,
        moe=parts.moe,
        criterion=parts.criterion,
        alignment=parts.alignment,
        head=parts.head,
        **options,
    ),
)
