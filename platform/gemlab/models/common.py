"""What every gemlab model is given and returns, and what the model registry knows about one.

A model is built from parts passed in by keyword: ``moe(dim, hidden)`` makes
each of its MoE layers (the run's router, experts and shared expert: see
:class:`gemlab.moe.registry.MoELayers`), and ``criterion`` is the loss it is
trained with, held as a submodule so that a loss with state (DQRoute's
moving averages) is checkpointed with the trunk. The model never sees the
router's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gemlab.moe.routing import Routing

MakeMoELayer = Callable[[int, int], nn.Module]  # (dim, hidden) -> an MoE layer returning (y, routing)


def summed_aux_losses(routings: list[Routing]) -> dict[str, torch.Tensor]:
    """Each named auxiliary loss summed over the MoE layers that produced ``routings``; raises nothing."""
    aux: dict[str, torch.Tensor] = {}
    for routing in routings:
        for name, value in routing.aux_losses.items():
            aux[name] = aux[name] + value if name in aux else value
    return aux


@dataclass
class ModelOutput:
    logits: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # summed over MoE layers, already weighted
    routings: list[Routing] = field(default_factory=list)  # one per MoE layer (routing heatmaps, loads)

    @property
    def aux_loss(self) -> torch.Tensor:
        return sum(self.aux_losses.values(), torch.zeros((), device=self.logits.device))

    @classmethod
    def collect(cls, logits: torch.Tensor, routings: list[Routing]) -> ModelOutput:
        """Sum each named auxiliary loss over the model's MoE layers."""
        return cls(logits, summed_aux_losses(routings), routings)


def training_criterion(criterion: nn.Module | None) -> nn.Module:
    """``criterion``, or plain cross-entropy when the router asks for no loss of its own."""
    return nn.CrossEntropyLoss() if criterion is None else criterion


@dataclass(frozen=True)
class ModelParts:
    """What the run gives every model: its classes, image size, MoE layers and training loss."""

    num_classes: int
    image_size: int
    moe: MakeMoELayer
    criterion: nn.Module | None = None


def _always(options: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class ModelSpec:
    """One model for the registry: ``build(parts, **options)``, where ``options`` are ``model.*`` keys.

    ``options`` lists the keys it reads (its file ``experiments/model/<name>.yaml`` sets each one);
    a config key outside it is refused rather than ignored. ``task`` is the task of the data it is
    built for (``classification``, ``detection``). ``uses_experts(options)`` says whether the model,
    so configured, holds experts at all: a dense baseline (Mixed-DINO) has no router to plan for,
    so its run is data-parallel and follows no plan whatever ``router`` says.
    """

    name: str
    options: tuple[str, ...]
    build: Callable[..., nn.Module]
    task: str = "classification"
    uses_experts: Callable[[Mapping[str, Any]], bool] = _always
