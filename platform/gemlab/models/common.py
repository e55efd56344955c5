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
MakeHead = Callable[[int], nn.Module]  # dim -> a classifier returning (logits, routing): experts that classify


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
    features: torch.Tensor | None = None  # (B, D) pooled features the head reads (feature alignment); None: none

    @property
    def aux_loss(self) -> torch.Tensor:
        return sum(self.aux_losses.values(), torch.zeros((), device=self.logits.device))

    @classmethod
    def collect(
        cls, logits: torch.Tensor, routings: list[Routing], features: torch.Tensor | None = None
    ) -> ModelOutput:
        """Sum each named auxiliary loss over the model's MoE layers; ``features`` are the head's input."""
        return cls(logits, summed_aux_losses(routings), routings, features)


def training_criterion(criterion: nn.Module | None) -> nn.Module:
    """``criterion``, or plain cross-entropy when the router asks for no loss of its own."""
    return nn.CrossEntropyLoss() if criterion is None else criterion


@dataclass(frozen=True)
class ModelParts:
    """What the run gives every model: its classes, image size, MoE layers and training loss.

    ``alignment`` is a classifier's feature-alignment term (:class:`gemlab.moe.subset_invariance.FeatureAlignment`,
    None: none): the classification task applies it to ``ModelOutput.features``; detectors ignore it.
    """

    num_classes: int
    image_size: int
    moe: MakeMoELayer | None  # None: a dense trunk (the router's experts are the head)
    criterion: nn.Module | None = None
    alignment: nn.Module | None = None
    head: MakeHead | None = None  # the router's classifier (DQRoute's experts); None: a linear classifier


def classifier(dim: int, num_classes: int, head: MakeHead | None) -> nn.Module:
    """The model's classifier: the router's ``head(dim)`` if it has one, else a linear layer."""
    return nn.Linear(dim, num_classes) if head is None else head(dim)


def classify(head: nn.Module, pooled: torch.Tensor, routings: list, labels: torch.Tensor | None) -> torch.Tensor:
    """(B, C) logits of :func:`classifier`'s module on (B, dim) ``pooled``; a router's head appends its routing.

    A router's head takes the labels (its experts' losses need them in training), as MoE layers do.
    """
    if isinstance(head, nn.Linear):
        return head(pooled)
    logits, routing = head(pooled, labels=labels)
    routings.append(routing)
    return logits


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


def in_trunk(name: str, trunk: tuple[str, ...]) -> bool:
    """Whether state-dict key or parameter ``name`` lies under one of the ``trunk`` names a model declares."""
    return any(name == part or name.startswith(part + ".") for part in trunk)


def trunk_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs of ``model``'s trunk, as its ``trunk_names()`` declares it.

    The trunk is the router-free stem that ``features`` computes (GEM's affinity backbone): what a
    pretrained file initialises (``trainer.init_from``) and what ``trainer.backbone_lr_scale`` scales.
    Raises TypeError for a model that declares no ``trunk_names``.
    """
    names = getattr(model, "trunk_names", None)
    if names is None:
        raise TypeError(f"{type(model).__name__} declares no trunk_names(): which of its parts is the trunk")
    trunk = tuple(names())
    return [(name, p) for name, p in model.named_parameters() if in_trunk(name, trunk)]
