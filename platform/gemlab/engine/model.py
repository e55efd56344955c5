"""The run's model: the configured model and router, built from what the run determines.

Router configs in ``experiments/router/`` hold only the knobs a user tunes,
and model configs in ``experiments/model/`` only the model's sizes; what the
run already knows -- the plan, the number of domains, the class counts, the
metadata columns, the capacity and seed -- is gathered here once as
:class:`RunFacts`, so a config never repeats the data. What differs between
routers and models is read from their specs (:mod:`gemlab.moe.registry`,
:mod:`gemlab.models.registry`), never from their names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gemlab.data.mixture import DomainMixture
from gemlab.engine.config import ConfigError, default_capacity
from gemlab.engine.invariance import build_alignment
from gemlab.engine.tasks import SUPERVISED, task_of
from gemlab.models.common import MakeHead, ModelParts, ModelSpec
from gemlab.models.registry import model_spec
from gemlab.moe.layer import MoELayer
from gemlab.moe.registry import MoELayers, router_spec, stem_only_layers
from gemlab.moe.spec import RouterSpec, RunFacts


def configured_router(cfg: Mapping) -> RouterSpec:
    """The spec of ``cfg.router``; raises ConfigError for an unknown router or a plan of the wrong level."""
    name = cfg["router"]["name"]
    try:
        spec = router_spec(name)
    except ValueError as error:
        raise ConfigError(f"router.name: {error}") from None
    level = cfg["plan"]["level"]
    if spec.plan_level is not None and level != spec.plan_level:
        raise ConfigError(f"router={name} needs a {spec.plan_level}-level plan: set plan.level={spec.plan_level}")
    return spec


def uses_experts(cfg: Mapping) -> bool:
    """Whether the configured model holds experts (a dense baseline does not); raises ConfigError as
    :func:`configured_model`."""
    spec, options = configured_model(cfg)
    return spec.uses_experts(options)


def checkpointed_experts(cfg: Mapping) -> int:
    """How many expert shards a checkpoint of the run holds (its meta's ``num_experts``): the configured experts,
    or none for a model without experts (Mixed-DINO keeps ``moe.num_experts`` in its config but builds no
    expert). Raises ConfigError as :func:`configured_model`."""
    return int(cfg["moe"]["num_experts"]) if uses_experts(cfg) else 0


def method_label(cfg: Mapping) -> str:
    """The method a run is recorded under: its router, or ``dense`` for a model without experts; a
    self-supervised objective's run, the objective and its heads' routing (``star-task_aware``, ``star-separate``)."""
    if cfg["objective"]["name"] != SUPERVISED:
        return f"{cfg['objective']['name']}-{cfg['model']['routing']}"
    return cfg["router"]["name"] if uses_experts(cfg) else "dense"


def needs_plan(cfg: Mapping) -> bool:
    """Whether the run follows a plan: a model with experts under a planned router.

    Raises ConfigError as :func:`configured_router` and :func:`configured_model`.
    """
    return uses_experts(cfg) and configured_router(cfg).plan_level is not None


def class_counts(mixture: DomainMixture) -> list[int]:
    """Training images per global class (an image counts once for each class it shows)."""
    counts: Counter = Counter()
    for domain_id, domain in enumerate(mixture.domains):
        to_global = mixture.labels.local_to_global[domain_id]
        for sample in domain.split("train"):
            shown = {sample.label} if sample.label is not None else set(sample.category_ids)
            counts.update(to_global[c] for c in shown)
    return [counts[c] for c in range(len(mixture.labels.names))]


def run_facts(cfg: Mapping, mixture: DomainMixture, plan=None) -> RunFacts:
    """What a router may be built from, as this run determines it."""
    num_domains, num_experts = len(mixture.domains), cfg["moe"]["num_experts"]
    return RunFacts(
        num_experts=num_experts,
        num_domains=num_domains,
        class_counts=tuple(class_counts(mixture)),
        metadata_columns={d.name: tuple(d.metadata_columns) for d in mixture.domains},
        plan=plan,
        capacity=cfg["plan"]["capacity"] or default_capacity(num_domains, num_experts),
        seed=cfg["seed"],
        batch_size=cfg["trainer"]["batch_size"],
    )


def routing_table(cfg: Mapping, mixture: DomainMixture, plan) -> tuple[int, ...] | None:
    """The fixed domain -> expert table of an expert-parallel router (its spec has one), else None.

    Such a router sends every token of a domain to one expert, known before
    training: the condition for expert-parallel training without all-to-all.
    Raises ConfigError when the table cannot be made (no plan, too little capacity).
    """
    spec = configured_router(cfg)
    if not spec.expert_parallel or not uses_experts(cfg):
        return None
    try:
        return tuple(spec.domain_table(run_facts(cfg, mixture, plan)))
    except ValueError as error:
        raise ConfigError(f"router={spec.name}: {error}") from None


def configured_model(cfg: Mapping) -> tuple[ModelSpec, dict[str, Any]]:
    """The spec of ``cfg.model`` and its options; raises ConfigError for an unknown model or a key it does not use.

    A key the model does not read is refused by name rather than ignored: ``model.depth`` under
    ``model=resnet`` would otherwise look like it configured something.
    """
    options = dict(cfg["model"])
    name = options.pop("name")
    try:
        spec = model_spec(name)
    except ValueError as error:
        raise ConfigError(f"model.name: {error}") from None
    unused = [key for key in options if key not in spec.options]
    if unused:
        raise ConfigError(
            f"model.{unused[0]}: the {name} model does not use it (its keys: {', '.join(spec.options)}); "
            f"choose a model with model=<name>, which sets exactly that model's keys"
        )
    return spec, options


def domain_groups(cfg: Mapping, mixture: DomainMixture, plan) -> tuple[int, ...] | None:
    """The run's domain -> expert table, else a domain-level plan's assignment (damex), else None.

    What subset-shared alignment groups domains by. Raises ConfigError as :func:`routing_table`.
    """
    table = routing_table(cfg, mixture, plan)
    if table is None and plan is not None and cfg["plan"]["level"] == "domain" and uses_experts(cfg):
        return tuple(plan.assignment.tolist())
    return table


def _build(
    cfg: Mapping,
    mixture: DomainMixture,
    moe: MoELayers | None,
    criterion: nn.Module | None,
    alignment: nn.Module | None = None,
    head: MakeHead | None = None,
) -> nn.Module:
    spec, options = configured_model(cfg)
    task, objective = mixture.domains[0].task, cfg["objective"]["name"]
    trained = task_of(mixture, cfg["objective"]).name  # the data's task, or a self-supervised objective on it
    if spec.task != trained and trained != task:
        raise ConfigError(
            f"model={spec.name} is a {spec.task} model, but objective={objective} trains {trained} models: "
            f"choose one with model=<name> (model=star for objective=star)"
        )
    if spec.task != trained:
        hint = f", or set objective={spec.task}" if spec.task == "star" else ""
        raise ConfigError(
            f"model={spec.name} is a {spec.task} model, but the data's domains are {task}: "
            f"choose a {task} model with model=<name> (docs/experiments.md lists them){hint}"
        )
    num_classes, image_size = len(mixture.labels.names), cfg["data"]["image_size"]
    parts = ModelParts(num_classes, image_size, moe, criterion, alignment=alignment, head=head)
    torch.manual_seed(cfg["seed"])
    try:
        return spec.build(parts, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model={spec.name}, router={cfg['router']['name']}: {error}") from None


def build_model(
    cfg: Mapping, mixture: DomainMixture, plan=None, local_experts: Sequence[int] | None = None
) -> nn.Module:
    """The configured classifier over the mixture's unified labels; ``local_experts`` = this worker's share.

    Seeded by ``cfg.seed``, so every worker builds the same shared weights and each expert the same weights
    wherever it is placed. The router's training loss, if it has one, is the model's ``criterion``; the
    feature alignment of ``invariance.*`` (:mod:`gemlab.engine.invariance`), if any, its ``alignment``;
    ``moe.param_budget`` sizes the MoE layers' experts (:class:`~gemlab.moe.registry.MoELayers`).
    Raises ConfigError for router or model options the constructors reject, for an alignment
    mode the router cannot serve, and for a parameter budget with no MoE FFN experts to size.
    """
    router = configured_router(cfg)
    facts = run_facts(cfg, mixture, plan)
    options = router.router_options(cfg["router"])
    head = router.classifier(facts, options)  # a router whose experts classify: a dense trunk, its head
    budget = cfg["moe"]["param_budget"]
    if budget is not None and head is not None:
        raise ConfigError(
            f"moe.param_budget={budget}: router={router.name}'s experts are classifiers (its head), not MoE FFN "
            "experts a budget can size; set moe.param_budget=null"
        )
    moe = MoELayers(router, facts, options, local_experts, param_budget=budget) if head is None else None
    try:
        criterion = router.build_criterion(facts, cfg["router"])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"router={router.name}: {error}") from None
    groups = domain_groups(cfg, mixture, plan) if cfg["invariance"]["mode"] == "subset" else None
    alignment = build_alignment(cfg, len(mixture.domains), groups)
    model = _build(cfg, mixture, moe, criterion, alignment, head)
    if budget is not None and not any(isinstance(module, MoELayer) for module in model.modules()):
        raise ConfigError(
            f"moe.param_budget={budget}: model={cfg['model']['name']} holds no MoE FFN experts for the budget to "
            "size (a dense model, or experts that own queries and heads); set moe.param_budget=null"
        )
    return model


def build_stem(cfg: Mapping, mixture: DomainMixture) -> nn.Module:
    """The configured model for its stem (``features``) alone: built before the plan, whatever the router.

    The stem's weights are drawn first, so they equal those of :func:`build_model`'s model.
    Raises ConfigError for model options the constructor rejects.
    """
    return _build(cfg, mixture, stem_only_layers(cfg["moe"]["num_experts"]), None)
