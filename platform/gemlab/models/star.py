"""STAR's network: a small convolutional trunk, STAR's projection-head experts, and a transformation predictor.

    model = STARNet(num_heads=4)
    out = model(views)                        # out.features, out.heads["invariant"].embedding, ...
    omega = model.predict_transformation(out1.heads["equivariant"].embedding, out2.heads["equivariant"].embedding)

The trunk is what a linear probe evaluates; the heads and the predictor
exist only for the self-supervised losses (:mod:`gemlab.engine.tasks.star`),
as a SimCLR projection head does. The trunk is a plain conv net -- conv,
BatchNorm, ReLU, each stage halving the resolution and doubling the width --
rather than the ViT of the supervised runs: on 28 px digits and two CPU
cores it learns in minutes, and no MoE layer of a router sits in it (the
heads are this model's only experts).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from gemlab.data.views import PARAMETERS
from gemlab.models.common import ModelParts, ModelSpec
from gemlab.moe.star import HeadMix, STARHeads


def _conv(inputs: int, outputs: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]


@dataclass
class STAROutput:
    features: torch.Tensor  # (B, dim): the trunk's pooled feature, what the probe reads
    heads: dict[str, HeadMix]  # objective -> its embedding and head weights


class STARNet(nn.Module):
    """Raises ValueError for sizes below 1 and whatever :class:`STARHeads` raises."""

    def __init__(
        self,
        *,
        channels: int = 3,
        width: int = 32,
        stages: int = 2,
        num_heads: int = 4,
        head_hidden: int = 256,
        out_dim: int = 64,
        routing: str = "task_aware",
    ) -> None:
        super().__init__()
        for key, value in (("width", width), ("stages", stages), ("head_hidden", head_hidden), ("out_dim", out_dim)):
            if value < 1:
                raise ValueError(f"star: {key}={value}: expected an integer >= 1")
        widths = [width * 2**i for i in range(stages + 1)]
        layers = _conv(channels, width, 1)
        for inputs, outputs in itertools.pairwise(widths):
            layers += _conv(inputs, outputs, 2)
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dim = widths[-1]
        self.heads = STARHeads(self.dim, out_dim, num_heads=num_heads, hidden=head_hidden, routing=routing)
        # φ: both views' equivariant embeddings -> the difference of their augmentation parameters
        self.predictor = nn.Sequential(
            nn.Linear(2 * out_dim, head_hidden), nn.GELU(), nn.Linear(head_hidden, len(PARAMETERS))
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, dim) pooled trunk features: what the linear probe is fitted on."""
        return self.trunk(images)

    def trunk_names(self) -> tuple[str, ...]:
        """The trunk's part: what ``trainer.init_from`` loads and ``trainer.backbone_lr_scale`` scales."""
        return ("trunk",)

    def forward(self, images: torch.Tensor) -> STAROutput:
        features = self.trunk(images)  # (B, dim)
        return STAROutput(features, self.heads(features))

    def predict_transformation(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """(B, 6): the predicted ω₂ − ω₁ from the two views' equivariant embeddings (B, out_dim) each."""
        return self.predictor(torch.cat([first, second], dim=1))


def _build(parts: ModelParts, **options) -> STARNet:
    """The network, from any image size (the trunk pools), with the run's expert count of heads.

    The heads are the run's experts, so ``moe.num_experts`` counts them, as it counts every method's
    experts (and the results' ``num_experts`` column with it). Raises ValueError naming the keys for
    separate heads of another count than 2, and for a feature alignment, which aligns a supervised
    classifier's features and has no place in a label-free objective.
    """
    num_heads = parts.moe.facts.num_experts  # the run's expert count, as every MoE layer gets it
    if options.get("routing") == "separate" and num_heads != 2:
        raise ValueError(f"model.routing=separate is one head per objective: set moe.num_experts=2 (got {num_heads})")
    if parts.alignment is not None:
        raise ValueError("invariance.mode: the star model trains no supervised features to align; set it to none")
    return STARNet(num_heads=num_heads, **options)


SPEC = ModelSpec(
    name="star",
    options=("width", "stages", "head_hidden", "out_dim", "routing"),
    build=_build,
    task="star",
    uses_experts=lambda options: False,  # its experts are projection heads: no router, no plan, data-parallel
)
