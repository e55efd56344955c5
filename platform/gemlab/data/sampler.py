"""The mixture sampler: (domain, index) pairs that a restored run can continue.

Every batch is a pure function of ``(seed, rank, step)``: its random stream
is seeded by exactly those three numbers. A run restored from a checkpoint at
step s therefore draws the very batches it would have drawn, with no sampler
state to save beyond the step; and a worker that trains only the domains
routed to its experts draws from that subset alone, at their relative
mixture weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from gemlab.data.errors import DataError
from gemlab.data.mixture import DomainMixture


class MixtureSampler:
    """Batches of (domain id, sample index) over a subset of a mixture's domains.

    Raises DataError for a batch size < 1, a negative seed/rank, or domain
    ids outside the mixture.
    """

    def __init__(
        self,
        mixture: DomainMixture,
        batch_size: int,
        seed: int,
        rank: int = 0,
        domain_ids: Sequence[int] | None = None,
        split: str = "train",
    ) -> None:
        if batch_size < 1:
            raise DataError(f"sampler: batch_size must be >= 1, got {batch_size}")
        if seed < 0 or rank < 0:
            raise DataError(f"sampler: seed and rank must be >= 0, got seed={seed}, rank={rank}")
        self.domain_ids = np.arange(len(mixture.domains)) if domain_ids is None else np.asarray(domain_ids)
        self.probabilities = mixture.subset_weights(self.domain_ids)
        self.sizes = np.array([len(mixture.domains[d].split(split)) for d in self.domain_ids])
        self.batch_size, self.seed, self.rank = batch_size, seed, rank

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The batch of ``step``: same (seed, rank, step), same pairs, whatever came before."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        picks = rng.choice(len(self.domain_ids), size=self.batch_size, p=self.probabilities)
        indices = np.floor(rng.random(self.batch_size) * self.sizes[picks]).astype(np.int64)
        return list(zip(self.domain_ids[picks].tolist(), indices.tolist(), strict=True))

    def batches(self, start_step: int = 0) -> Iterator[list[tuple[int, int]]]:
        """Batches from ``start_step`` on, forever (a restored run passes its step)."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1
