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

from gemlab.models.common import MakeMoELayer, ModelOutput, ModelSpec, training_criterion

FEATURES = 512


class MoEResNet(nn.Module):
    """``moe(512, hidden)`` builds the expert heads; ``criterion`` is the training loss (None: cross-entropy).

    Raises FileNotFoundError for a missing checkpoint, RuntimeError for one that does not fit,
    and whatever ``moe`` raises.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        moe: MakeMoELayer,
        criterion: nn.Module | None = None,
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
        self.experts = moe(FEATURES, hidden)
        self.head = nn.Linear(FEATURES, num_classes)
        self.criterion = training_criterion(criterion)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 512) pooled trunk features: the router-free backbone of GEM's affinity."""
        return self.trunk(images)

    def forward(
        self,
        images: torch.Tensor,
        *,
        domain: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        metadata: torch.Tensor | None = None,
    ) -> ModelOutput:
        features = self.trunk(images)  # (B, 512)
        y, routing = self.experts(features, domain=domain, labels=labels, metadata=metadata)
        return ModelOutput.collect(self.head(features + y), [routing])


SPEC = ModelSpec(
    name="resnet",
    options=("hidden",),
    build=lambda parts, **options: MoEResNet(
        num_classes=parts.num_classes, moe=parts.moe, criterion=parts.criterion, **options
    ),
)
