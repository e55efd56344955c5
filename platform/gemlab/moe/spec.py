"""What a router declares about itself, and the run's facts it is built from.

Every router module under :mod:`gemlab.moe.routers` ends with one
``SPEC = RouterSpec(...)``. The spec is all the rest of the platform knows
about a router: whether it follows a plan (and at which level), whether its
layers hold a shared expert, whether it routes by a domain -> expert table
fixed before training (which makes a run expert-parallel and gives it a
cross-expert matrix), how it is built, and the loss it trains with if not
plain cross-entropy. Nothing outside the router's module branches on its name.

A router is built once per MoE layer from the layer's token width, the
:class:`RunFacts`, and the knobs of its config file -- everything at
construction, nothing wired in afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn


@dataclass(frozen=True)
class RunFacts:
    """What the run knows that a router may need; the engine fills it in, so a router config never repeats the data.

    ``plan`` is any object with ``num_experts`` and ``assignment`` (a :class:`gemlab.plan.plan.Plan`).
    """

    num_experts: int
    num_domains: int = 1
    class_counts: tuple[int, ...] = ()  # training images per global class
    metadata_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # domain name -> its columns
    plan: Any = None
    capacity: int | None = None  # domains per expert (the plan's capacity); None = not known
    seed: int = 0
    batch_size: int | None = None  # training samples per step on each worker; None = not known

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    def plan_table(self) -> list[int]:
        """The plan's task -> expert table; raises ValueError without a plan or for another expert count."""
        if self.plan is None:
            raise ValueError("needs a plan (a task -> expert table)")
        if self.plan.num_experts != self.num_experts:
            raise ValueError(f"the plan has {self.plan.num_experts} experts, the layer {self.num_experts}")
        return self.plan.assignment.tolist()

    def metadata_dim(self) -> int:
        """The number of metadata columns; raises ValueError unless every domain has the same, non-empty ones."""
        columns = set(self.metadata_columns.values())
        if len(columns) != 1 or not next(iter(columns)):
            found = {name: list(cols) for name, cols in self.metadata_columns.items()}
            stale = " (digits generated before they carried lat/lon have none: delete that data.path to regenerate)"
            raise ValueError(
                f"every domain needs the same metadata columns; found {found}" + ("" if any(columns) else stale)
            )
        return len(next(iter(columns)))


PlanLevel = Literal["domain", "class"]


@dataclass(frozen=True)
class RouterSpec:
    """One router, as the platform sees it.

    ``build(dim, facts, **options)`` returns the router of one MoE layer; ``options`` are the
    keys of ``experiments/router/<name>.yaml`` (less ``name`` and the criterion's keys), so an
    option the builder does not take is a TypeError naming it.

    A router whose experts are *classifiers* on the model's pooled features (DQRoute) declares
    ``head(dim, facts, **options)`` instead of ``build``: the module it returns replaces the model's
    linear classifier and returns ``(logits, routing)`` like an MoE layer, and the model's trunk is
    then dense (it builds no MoE layers). Raises TypeError unless exactly one of the two is given.
    """

    name: str
    build: Callable[..., nn.Module] | None = None  # build(dim, facts, **options): one MoE layer's router
    plan_level: PlanLevel | None = None  # the plan it follows: tasks are domains or classes; None = no plan
    domain_table: Callable[[RunFacts], Sequence[int]] | None = None  # domain -> expert, fixed before training
    shared_expert: bool = False  # each layer holds an always-on expert beside the routed ones
    criterion: Callable[..., nn.Module] | None = None  # criterion(facts, **keys): its training loss
    criterion_keys: tuple[str, ...] = ()  # config keys that configure the criterion, not the router
    head: Callable[..., nn.Module] | None = None  # head(dim, facts, **options): the classifier, experts inside
    forcible_without_table: bool = False  # its routers can be forced to one expert though they follow no table

    def __post_init__(self) -> None:
        if (self.build is None) == (self.head is None):
            raise TypeError(f"router {self.name!r}: a RouterSpec declares exactly one of build and head")

    def classifier(self, facts: RunFacts, options: Mapping[str, Any]) -> Callable[[int], nn.Module] | None:
        """``dim -> head`` for a router whose experts are classifiers (the model calls it, seeded); else None."""
        if self.head is None:
            return None
        return lambda dim: self.head(dim, facts, **options)

    @property
    def expert_parallel(self) -> bool:
        """Every token of a domain goes to one expert known before training: workers hold only their experts.

        Such a router can also be forced to one expert, which is what the cross-expert matrix does.
        """
        return self.domain_table is not None

    @property
    def forcible(self) -> bool:
        """Its routers can send every token to one chosen expert (``forced``): the cross-expert matrix exists.

        Known from the spec, so a run whose router cannot be forced builds no model to find out.
        """
        return self.expert_parallel or self.forcible_without_table

    def router_options(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The router's own knobs of a router config (``name`` and the criterion's keys removed)."""
        return {k: v for k, v in config.items() if k != "name" and k not in self.criterion_keys}

    def build_criterion(self, facts: RunFacts, config: Mapping[str, Any]) -> nn.Module | None:
        """The training loss this router asks for, from its keys of ``config``; None for plain cross-entropy.

        Raises whatever the criterion's constructor raises for a bad value (ValueError).
        """
        if self.criterion is None:
            return None
        return self.criterion(facts, **{k: config[k] for k in self.criterion_keys if k in config})
