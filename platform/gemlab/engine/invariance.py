"""The run's feature alignment (``invariance.mode``, ``invariance.weight``): which domain pairs it aligns.

    alignment = build_alignment(cfg, num_domains, table)   # None under mode none
    check_alignment_parallelism(cfg, expert_parallel=True, max_workers=2)   # ConfigError for global

* ``none`` -- no alignment term.
* ``global`` -- every pair of domains in a batch (Deep CORAL / DomainBed's CORAL).
* ``subset`` -- only pairs the run's domain -> expert table puts on one expert (seed 002): the
  table of an expert-parallel router (``gem``, ``random``), else a domain-level plan's assignment
  (``damex``, whose learned router the plan supervises). A router with neither has no subsets:
  a ConfigError naming ``invariance.mode``.

**Global alignment and expert parallelism.** Under a domain -> expert table, worker w samples
only its experts' domains, so the pairs inside its batch are exactly subset pairs (of its
experts); global alignment would need the other workers' features. Gathering them would put
an autograd all-gather of every domain's covariance into each step, a cost and a collective
the subset mode never needs, so it is refused instead: ``global`` runs data-parallel (every
worker samples the whole mixture) or expert-parallel on one worker. Subset alignment works on
any worker count, each worker aligning the pairs of its own batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gemlab.engine.config import ConfigError
from gemlab.moe.subset_invariance import FeatureAlignment


def alignment_table(cfg: Mapping, num_domains: int, table: Sequence[int] | None) -> tuple[int, ...]:
    """The domain -> group table of ``invariance.mode`` (global: one group; subset: ``table``).

    ``table`` is the run's domain -> expert table (or a domain-level plan's assignment), None when
    it has none. Raises ConfigError naming ``invariance.mode`` for subset without a table.
    """
    mode = cfg["invariance"]["mode"]
    if mode == "global":
        return (0,) * num_domains
    if table is None:
        raise ConfigError(
            f"invariance.mode={mode}: router={cfg['router']['name']} has no domain -> expert table or "
            "domain-level plan, so no domains share an expert; use a planned router (gem, random, damex) "
            "or invariance.mode=global"
        )
    return tuple(int(j) for j in table)


def build_alignment(cfg: Mapping, num_domains: int, table: Sequence[int] | None) -> FeatureAlignment | None:
    """The alignment term the model trains with; None under ``invariance.mode=none``.

    Raises ConfigError as :func:`alignment_table`.
    """
    invariance = cfg["invariance"]
    if invariance["mode"] == "none":
        return None
    return FeatureAlignment(alignment_table(cfg, num_domains, table), invariance["weight"], invariance["mode"])


def check_alignment_parallelism(cfg: Mapping, expert_parallel: bool, max_workers: int) -> None:
    """Refuse global alignment on an expert-parallel run of several workers (see the module docstring).

    Raises ConfigError naming ``invariance.mode``.
    """
    if cfg["invariance"]["mode"] == "global" and expert_parallel and max_workers > 1:
        raise ConfigError(
            f"invariance.mode=global: router={cfg['router']['name']} trains expert-parallel, so each of the "
            f"{max_workers} workers sees only its experts' domains and cannot align them with the others'; "
            "use trainer.num_workers=1, a data-parallel router, or invariance.mode=subset"
        )
