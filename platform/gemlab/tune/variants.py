"""Named variants in one sweep: the space's ``variant`` axis, each label a set of config overrides.

GEM's Table II compares models that no single config key tells apart:
Mixed-DINO (``model=dino``), DINO-MoE (``router=topk``), GEMGR-DINO
(``model=gemgr_dino``) and GEM-DINO (``router=gem``) are each a different
combination of a model and a router, and two of them record the same router.
A grid over ``model`` and ``router`` would also train every pairing no one
asked for. So a sweep names its variants:

    sweep:
      space:
        variant: [Mixed-DINO, DINO-MoE, GEM-DINO]
        seed: [0, 1, 2]
      variants:
        Mixed-DINO: {model: dino}
        DINO-MoE: {router: topk}
        GEM-DINO: {router: gem}

A trial's ``variant`` value is not a config key: its overrides join the
trial's *links* (overrides that add no ``param:`` column, as a two-stage
sweep's parent folders do, :mod:`gemlab.tune.stages`). The label itself is
the trial's ``param:variant`` column, and a report names the method by it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gemlab.engine.config import ConfigError
from gemlab.results_schema import VARIANT_KEY
from gemlab.tune.space import override


def variants_from_block(block: Any, space: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``sweep.variants`` block, checked against the space ({} when neither names variants).

    Raises ConfigError naming the key: variants without a ``variant`` axis (or the reverse), a label of
    the axis with no overrides, a variant that is not a mapping, or one that sets a key the space sweeps.
    """
    block = {} if block is None else block
    axis = space.get(VARIANT_KEY)
    if not isinstance(block, Mapping):
        raise ConfigError(f"sweep.variants={block!r}: expected {{label: {{config key: value}}}}")
    if not block and axis is None:
        return {}
    if not block:
        raise ConfigError(f"sweep.space.{VARIANT_KEY}: the labels {axis!r} need their overrides in sweep.variants")
    if not isinstance(axis, list):
        raise ConfigError(f"sweep.variants: needs the labels listed in sweep.space.{VARIANT_KEY}, got {axis!r}")
    unknown = [label for label in axis if label not in block]
    if unknown:
        raise ConfigError(f"sweep.space.{VARIANT_KEY}: {unknown} are not labels of sweep.variants {sorted(block)}")
    variants = {}
    for label, overrides in block.items():
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"sweep.variants.{label}={overrides!r}: expected {{config key: value}}")
        swept = sorted(set(overrides) & set(space))
        if swept:
            raise ConfigError(f"sweep.variants.{label}: sets {swept}, which sweep.space sweeps")
        variants[str(label)] = dict(overrides)
    return variants


def variant_links(
    trials: Sequence[Mapping[str, Any]], variants: Mapping[str, Mapping[str, Any]]
) -> dict[int, list[str]]:
    """Trial index -> the overrides of its variant (trials without one are left out); raises nothing."""
    return {
        index: [override(key, value) for key, value in variants[params[VARIANT_KEY]].items()]
        for index, params in enumerate(trials)
        if VARIANT_KEY in params
    }


def joined_links(*links: Mapping[int, list[str]]) -> dict[int, list[str]]:
    """Each trial's links of every kind, in the order given; raises nothing."""
    joined: dict[int, list[str]] = {}
    for kind in links:
        for index, overrides in kind.items():
            joined.setdefault(index, []).extend(overrides)
    return joined
