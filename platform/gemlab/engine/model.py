"""The run's model, with its router filled in from the run (plan, domains, classes).

Router configs in ``experiments/router/`` hold only the knobs a user tunes;
what the run already knows -- the plan's table, the number of domains and
their capacity (``random``), class groups from class counts
(``confidence``) -- is added here, so a config never repeats the data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gemlab.data.mixture import DomainMixture
from gemlab.engine.config import ConfigError, default_capacity
from gemlab.models.resnet import MoEResNet
from gemlab.models.vit import MoEViT
from gemlab.moe.factory import build_router
from gemlab.moe.routers.confidence import DifficultyWeights, class_groups
from gemlab.moe.routers.gem import GEMRouter

PLANNED_ROUTERS = ("gem", "class_gem", "damex")
DIFFICULTY_KEYS = ("gamma", "alpha", "momentum")  # DQRoute's class weights, under router=confidence


def needs_plan(cfg: Mapping) -> bool:
    return cfg["router"]["name"] in PLANNED_ROUTERS


def class_counts(mixture: DomainMixture) -> list[int]:
    """Training images per global class."""
    counts: Counter = Counter()
    for domain_id, domain in enumerate(mixture.domains):
        to_global = mixture.labels.local_to_global[domain_id]
        counts.update(to_global[s.label] for s in domain.split("train"))
    return [counts[c] for c in range(len(mixture.labels.names))]


def router_config(cfg: Mapping, mixture: DomainMixture) -> dict[str, Any]:
    """The router options of ``cfg.router`` plus what the run determines; raises ConfigError when unusable."""
    options = dict(cfg["router"])
    name, num_experts = options["name"], cfg["moe"]["num_experts"]
    if name == "random":
        capacity = cfg["plan"]["capacity"] or default_capacity(len(mixture.domains), num_experts)
        options.update(num_domains=len(mixture.domains), capacity=capacity, seed=cfg["seed"])
    elif name == "confidence":
        for key in DIFFICULTY_KEYS:  # the loss's class weights, not the router's
            options.pop(key, None)
        medium, tail = options.pop("medium_threshold"), options.pop("tail_threshold")
        options.update(groups=class_groups(class_counts(mixture), medium, tail), num_classes=len(mixture.labels.names))
    elif name == "metadata":
        columns = {d.metadata_columns for d in mixture.domains}
        if len(columns) != 1 or not next(iter(columns)):
            found = {d.name: list(d.metadata_columns) for d in mixture.domains}
            hint = " (digits generated before they carried lat/lon: delete data.path to regenerate)"
            stale_digits = cfg["data"]["source"] == "digits" and not any(found.values())
            raise ConfigError(
                f"router=metadata: every domain needs the same metadata columns; found {found}"
                + (hint if stale_digits else "")
            )
        options.setdefault("metadata_dim", len(next(iter(columns))))
    level = "class" if name == "class_gem" else "domain"
    if name in PLANNED_ROUTERS and cfg["plan"]["level"] != level:
        raise ConfigError(f"router={name} needs a {level}-level plan: set plan.level={level}")
    return options


def routing_table(cfg: Mapping, mixture: DomainMixture, plan) -> tuple[int, ...] | None:
    """The fixed domain -> expert table of a router that has one (gem, random), else None.

    Such a router sends every token of a domain to one expert, known before
    training: the condition for expert-parallel training without all-to-all.
    """
    options = router_config(cfg, mixture)
    name = options.pop("name")
    dim = cfg["model"]["dim"]
    try:
        router = build_router(name, dim=dim, num_experts=cfg["moe"]["num_experts"], plan=plan, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"router={name}: {error}") from None
    if isinstance(router, GEMRouter) and router.key == "domain":
        return tuple(router.table.tolist())
    return None


def build_model(
    cfg: Mapping, mixture: DomainMixture, plan=None, local_experts: Sequence[int] | None = None
) -> nn.Module:
    """The configured classifier over the mixture's unified labels; ``local_experts`` = this worker's share.

    Seeded by ``cfg.seed``, so every worker builds the same shared weights and each expert the same weights
    wherever it is placed. Raises ConfigError for router or model options the constructors reject.
    """
    model_cfg, router = dict(cfg["model"]), router_config(cfg, mixture)
    name = model_cfg.pop("name")
    common = {
        "num_classes": len(mixture.labels.names),
        "router": router,
        "num_experts": cfg["moe"]["num_experts"],
        "plan": plan,
        "local_experts": local_experts,
    }
    torch.manual_seed(cfg["seed"])
    try:
        if name == "vit":
            model = MoEViT(image_size=cfg["data"]["image_size"], **model_cfg, **common)
        else:
            model = MoEResNet(hidden=model_cfg["dim"] * model_cfg["mlp_ratio"], **common)
        if router["name"] == "confidence":
            # DQRoute's per-class loss weights; a submodule, so its moving averages are checkpointed with the trunk
            weights = {k: cfg["router"][k] for k in DIFFICULTY_KEYS if k in cfg["router"]}
            model.difficulty = DifficultyWeights(class_counts(mixture), **weights)
        return model
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model={name}, router={router['name']}: {error}") from None
