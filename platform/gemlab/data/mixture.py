"""``DomainMixture``: ordered domains, their sampling weights, one label space.

Sampling weights follow ``p_d ∝ n_d^α``: α = 1 samples every image equally
often (large domains dominate), α = 0 samples every domain equally often,
and values between trade the two off -- the usual temperature knob of
multi-dataset training.

A *replay* mixture (continuing a trained model on added domains) reweights
by group instead: the added domains share mass ``1 - r`` and the domains the
model was trained on share ``r``, each group internally still by ``n_d^α``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gemlab.data.domain import Domain, _duplicates
from gemlab.data.errors import DataError


def _replayed(powered: np.ndarray, names: Sequence[str], added: Sequence[str], fraction: float) -> np.ndarray:
    """Weights giving the ``added`` domains mass 1 - ``fraction`` and the rest ``fraction``, each group by ``powered``.

    Raises DataError for an added name that is not a domain, no added or no other domain, a fraction outside
    [0, 1), or a group whose domains all have weight 0 while it is given mass.
    """
    unknown = [name for name in added if name not in names]
    if unknown:
        raise DataError(f"mixture: added domain(s) {unknown} are not among the domains {list(names)}")
    if not (0 <= fraction < 1):
        raise DataError(f"mixture: the replay fraction must be in [0, 1), got {fraction}")
    new = np.array([name in added for name in names])
    weights = np.zeros_like(powered)
    for group, mass in ((new, 1.0 - fraction), (~new, fraction)):
        if mass == 0:
            continue
        total = powered[group].sum()
        if not total > 0:
            which = "added" if group is new else "replayed"
            raise DataError(f"mixture: the {which} domains have no weight to give mass {mass:g} to")
        weights[group] = powered[group] / total * mass
    return weights


@dataclass(frozen=True)
class LabelSpace:
    """The union of the domains' label spaces by category name.

    Global ids follow first appearance (domain order, then each domain's
    category order), so they are stable when domains are appended.
    ``local_to_global[d]`` maps domain d's own category ids to global ids.
    """

    names: tuple[str, ...]
    local_to_global: tuple[dict[int, int], ...]

    def owners(self, global_id: int) -> tuple[int, ...]:
        """Domains whose label space contains this category."""
        return tuple(d for d, mapping in enumerate(self.local_to_global) if global_id in mapping.values())


class DomainMixture:
    """Ordered domains with sampling weights ``p_d ∝ n_d^α`` and a unified label space.

    ``heldout`` names domains that are evaluated but never trained on (leave-one-domain-out, as
    DomainBed does): they keep their place, ids and labels in the mixture, so every evaluation and
    routing table covers them, but their sampling weight is 0 and the others' are renormalised
    among themselves. ``replay`` = (added domain names, r) gives the added domains mass 1 - r and the
    others r (see the module docstring); with r = 0 the others are evaluated but not sampled.
    ``untrained`` lists every domain of weight 0. Raises DataError for no domains, duplicate domain
    names, a negative α, a held-out or added name that is not a domain, r outside [0, 1), or a
    mixture left with nothing to train on.
    """

    def __init__(
        self,
        domains: Sequence[Domain],
        alpha: float = 1.0,
        heldout: Sequence[str] = (),
        replay: tuple[Sequence[str], float] | None = None,
    ) -> None:
        if not domains:
            raise DataError("mixture: no domains")
        names = [d.name for d in domains]
        if _duplicates(names):
            raise DataError(f"mixture: duplicate domain name(s) {_duplicates(names)}")
        if not (alpha >= 0 and np.isfinite(alpha)):
            raise DataError(f"mixture: alpha must be a finite number >= 0, got {alpha}")
        unknown = [name for name in heldout if name not in names]
        if unknown:
            raise DataError(f"mixture: held-out domain(s) {unknown} are not among the domains {names}")
        self.domains = tuple(domains)
        self.alpha = float(alpha)
        self.heldout = tuple(d for d, name in enumerate(names) if name in heldout)
        self.training = tuple(d for d in range(len(names)) if d not in self.heldout)
        if not self.training:
            raise DataError(f"mixture: every domain is held out ({names}); nothing is left to train on")
        sizes = np.array([d.size for d in domains], dtype=np.float64)
        powered = sizes**self.alpha
        powered[list(self.heldout)] = 0.0  # after the power: 0**0 is 1, and α = 0 must not draw them either
        self.weights = powered / np.sum(powered) if replay is None else _replayed(powered, names, *replay)
        self.untrained = tuple(int(d) for d in np.flatnonzero(self.weights == 0))
        self.labels = self._unify()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    def index(self, name: str) -> int:
        """Position of a domain; raises DataError naming the unknown domain."""
        try:
            return self.names.index(name)
        except ValueError:
            raise DataError(f"mixture: no domain {name!r} (domains: {list(self.names)})") from None

    def subset_weights(self, domain_ids: Sequence[int]) -> np.ndarray:
        """The weights of ``domain_ids`` renormalised to sum to 1 (a worker's share of the mixture).

        Raises DataError for ids outside the mixture or ids that are all held out (nothing to draw).
        """
        ids = np.asarray(domain_ids, dtype=np.int64)
        if len(ids) == 0 or ids.min() < 0 or ids.max() >= len(self.domains):
            raise DataError(f"mixture: domain ids {ids.tolist()} not in 0..{len(self.domains) - 1}")
        weights = self.weights[ids]
        if not weights.sum() > 0:
            raise DataError(f"mixture: domains {[self.names[d] for d in ids]} are held out; none can be sampled")
        return weights / weights.sum()

    def _unify(self) -> LabelSpace:
        names: dict[str, int] = {}
        mappings = []
        for domain in self.domains:
            mapping = {}
            for category in domain.categories:
                mapping[category.id] = names.setdefault(category.name, len(names))
            mappings.append(mapping)
        return LabelSpace(tuple(names), tuple(mappings))
