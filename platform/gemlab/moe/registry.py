"""Routers by name, and the MoE layers a model builds from one of them.

    layers = MoELayers(router_spec("topk"), RunFacts(num_experts=8), {"k": 2})
    layer = layers(dim=256, hidden=1024)          # a model calls this once per MoE layer
    budgeted = MoELayers(router_spec("topk"), RunFacts(num_experts=8), {"k": 2}, param_budget=4)
    budgeted(dim=256, hidden=1024)                # 8 experts of hidden 511: together 4 dense FFNs' parameters

The table is read once from the modules of :mod:`gemlab.moe.routers`, each
of which declares one ``SPEC`` (see :mod:`gemlab.moe.spec`): adding a router
is one module there and one ``experiments/router/<name>.yaml``, and nothing
else in the package names it. Configs and sweeps name exactly the routers
of this table, and an unknown name is an error that lists them.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from torch import nn

from gemlab.moe import routers
from gemlab.moe.experts import ExpertFFN, Experts
from gemlab.moe.layer import MoELayer
from gemlab.moe.routers.gem import GEMRouter
from gemlab.moe.spec import RouterSpec, RunFacts


def _declared_specs() -> dict[str, RouterSpec]:
    """Every router module's ``SPEC``, by name; raises TypeError for a module without one or a name twice."""
    specs: dict[str, RouterSpec] = {}
    for module_info in sorted(pkgutil.iter_modules(routers.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{routers.__name__}.{module_info.name}")
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, RouterSpec):
            raise TypeError(f"{module.__name__}: a router module declares SPEC = RouterSpec(...)")
        if spec.name in specs:
            raise TypeError(f"{module.__name__}: router name {spec.name!r} is declared twice")
        specs[spec.name] = spec
    return specs


ROUTERS: dict[str, RouterSpec] = _declared_specs()


def router_spec(name: str) -> RouterSpec:
    """The spec of router ``name``; raises ValueError naming the known routers for an unknown one."""
    if name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; choose one of {sorted(ROUTERS)}")
    return ROUTERS[name]


def build_router(name: str, dim: int, facts: RunFacts, **options: Any) -> nn.Module:
    """One router: ``name``'s builder with ``options``.

    Raises ValueError for an unknown name or options the router refuses (a plan it lacks, k out of
    range ...), or a router whose experts are classifiers (it has a ``head``, no layer router),
    TypeError for an option it does not take.
    """
    spec = router_spec(name)
    if spec.build is None:
        raise ValueError(f"router {name!r} builds a classifier head, not an MoE layer's router (RouterSpec.head)")
    return spec.build(dim, facts, **options)


def ffn_parameters(dim: int, hidden: int) -> int:
    """Parameters of one FFN ``dim -> hidden -> dim`` with biases (an :class:`ExpertFFN`); raises nothing."""
    return hidden * (2 * dim + 1) + dim


def budget_hidden(dim: int, hidden: int, num_experts: int, budget: float) -> int:
    """The experts' hidden width under a parameter budget: the largest h with
    ``num_experts · ffn_parameters(dim, h) <= budget · ffn_parameters(dim, hidden)``.

    ``budget`` is in dense FFNs of width ``hidden``: the layer's experts together hold that many FFNs'
    parameters whatever their number (GEM Fig. 11: budget 4 gives E=2 experts of 2.0x, E=4 of 1.0x).
    Rounding down keeps every count within the budget and within one hidden unit per expert of it. Exact
    (rational arithmetic), so ``budget = E`` gives exactly ``hidden``. Raises ValueError naming
    ``moe.param_budget`` when not even one hidden unit per expert fits.
    """
    share = Fraction(budget) * ffn_parameters(dim, hidden) / num_experts  # each expert's parameters
    width = math.floor((share - dim) / (2 * dim + 1))
    if width < 1:
        smallest = num_experts * ffn_parameters(dim, 1) / ffn_parameters(dim, hidden)
        raise ValueError(
            f"moe.param_budget={budget}: {num_experts} experts of a {dim} -> {hidden} -> {dim} layer would get "
            f"less than one hidden unit each; a budget of at least {math.ceil(smallest * 1e4) / 1e4:g} gives them one"
        )
    return width


@dataclass(frozen=True)
class MoELayers:
    """How a model builds each of its MoE layers: a router from the spec, the experts, a shared expert if any.

    ``options`` are the router's own knobs (:meth:`RouterSpec.router_options`); ``local_experts`` are
    this worker's experts (None: all). ``param_budget`` (``moe.param_budget``; None: none) sizes the
    routed experts so that together they hold that many of the layer's dense FFNs (:func:`budget_hidden`),
    whatever their number; a shared expert (MoGE's) is always on, so it keeps the dense width. The
    router is drawn from the RNG before the experts, and the experts before the shared expert, in every
    layer: the order that fixes a seeded model's weights.
    """

    spec: RouterSpec
    facts: RunFacts
    options: Mapping[str, Any] = field(default_factory=dict)
    local_experts: Sequence[int] | None = None
    param_budget: float | None = None

    def expert_hidden(self, dim: int, hidden: int) -> int:
        """The routed experts' hidden width in a layer whose dense FFN is ``dim -> hidden -> dim``.

        Raises ValueError as :func:`budget_hidden`.
        """
        if self.param_budget is None:
            return hidden
        return budget_hidden(dim, hidden, self.facts.num_experts, self.param_budget)

    def __call__(self, dim: int, hidden: int) -> MoELayer:
        """One MoE layer of width ``dim`` whose dense FFN would be ``dim -> hidden -> dim``.

        Raises what the router's builder raises (ValueError, TypeError for an unknown option),
        and ValueError for bad sizes, local experts, or a budget too small for one hidden unit.
        """
        router = self.spec.build(dim, self.facts, **self.options)
        experts = Experts(self.facts.num_experts, dim, self.expert_hidden(dim, hidden), self.local_experts)
        with_shared = self.spec.shared_expert and getattr(router, "uses_shared_expert", True)  # MoGE's ablation
        shared = ExpertFFN(dim, hidden) if with_shared else None
        return MoELayer(router=router, experts=experts, shared_expert=shared)


_NEVER_ROUTES = RouterSpec(
    name="stem-only",
    build=lambda dim, facts: GEMRouter([0], facts.num_experts),
    domain_table=lambda facts: [0] * facts.num_domains,  # for models whose experts own per-domain parts (GEMGR)
)


def stem_only_layers(num_experts: int) -> MoELayers:
    """MoE layers for a model that is asked only for its stem (``features``), before any plan exists.

    The stem is drawn from the RNG before any MoE layer, so these layers change none of its weights;
    their router (every id to expert 0, no parameters) and their domain table are never used.
    """
    return MoELayers(_NEVER_ROUTES, RunFacts(num_experts=num_experts))
