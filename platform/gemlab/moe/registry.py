"""Routers by name, and the MoE layers a model builds from one of them.

    layers = MoELayers(router_spec("topk"), RunFacts(num_experts=8), {"k": 2})
    layer = layers(dim=256, hidden=1024)          # a model calls this once per MoE layer

The table is read once from the modules of :mod:`gemlab.moe.routers`, each
of which declares one ``SPEC`` (see :mod:`gemlab.moe.spec`): adding a router
is one module there and one ``experiments/router/<name>.yaml``, and nothing
else in the package names it. Configs and sweeps name exactly the routers
of this table, and an unknown name is an error that lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class MoELayers:
    """How a model builds each of its MoE layers: a router from the spec, the experts, a shared expert if any.

    ``options`` are the router's own knobs (:meth:`RouterSpec.router_options`); ``local_experts`` are
    this worker's experts (None: all). The router is drawn from the RNG before the experts, and the
    experts before the shared expert, in every layer: the order that fixes a seeded model's weights.
    """

    spec: RouterSpec
    facts: RunFacts
    options: Mapping[str, Any] = field(default_factory=dict)
    local_experts: Sequence[int] | None = None

    def __call__(self, dim: int, hidden: int) -> MoELayer:
        """One MoE layer of width ``dim``, experts ``dim -> hidden -> dim``.

        Raises what the router's builder raises (ValueError, TypeError for an unknown option),
        and ValueError for bad sizes or local experts.
        """
        router = self.spec.build(dim, self.facts, **self.options)
        experts = Experts(self.facts.num_experts, dim, hidden, self.local_experts)
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
