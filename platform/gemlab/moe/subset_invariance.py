"""Subset-shared invariance (seed 002): align features only among the domains that share an expert.

Domains the plan puts on one expert should look alike to that expert; a
global alignment penalty would also pull together domains the plan keeps
apart on purpose. So CORAL (Deep CORAL, Sun & Saenko 2016, Eq. 1) is applied
to pairs of domains in the batch that share an expert in the plan, averaged
over those pairs. Global alignment is the same rule under a table that puts
every domain in one group, so the two modes differ only in the pairs they
align, never in how a pair is scored.

Seed 002 is a summary without equations; the choices made here are:

* the per-pair distance is Deep CORAL's Eq. 1, ``||C_a - C_b||_F^2 / (4 d^2)``
  with the unbiased covariance of its Eq. 2, because it is the alignment
  the DomainBed baselines use and needs no extra parameters;
* pairs are averaged, not summed, so λ means the same whether a batch holds
  two aligned pairs or ten (and global and subset runs share a λ scale);
* a domain needs at least two samples in the batch to have a covariance;
  domains with fewer take no part in that step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gemlab.moe.losses import coral_loss


def subset_coral_penalty(features: torch.Tensor, domains: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean CORAL over pairs of domains present (>= 2 samples each) that ``table`` maps to the same expert.

        L_inv = (1 / |P|) sum_{(a, b) in P} CORAL(F_a, F_b),
        P = {(a, b): a < b present in the batch, table[a] = table[b]}

    ``features`` (B, D), ``domains`` (B,), ``table`` (num_domains,) domain -> expert. 0 (still in the
    graph) when no pair qualifies. Raises IndexError for a domain id the table does not cover.
    """
    present = [d for d in domains.unique().tolist() if int((domains == d).sum()) >= 2]
    penalties = [
        coral_loss(features[domains == a], features[domains == b])
        for i, a in enumerate(present)
        for b in present[i + 1 :]
        if table[a] == table[b]
    ]
    return torch.stack(penalties).mean() if penalties else features.sum() * 0.0


class FeatureAlignment(nn.Module):
    """The invariance term of a training loss: ``weight`` × :func:`subset_coral_penalty` under ``table``.

    ``table`` maps each domain of the run to a group: the plan's domain -> expert table for
    subset-shared alignment, one group for every domain for global alignment. It is a
    non-persistent buffer, so a checkpoint holds nothing of it (the plan is saved with the run).
    Calling it returns the *unweighted* penalty (what a progress line shows); the task multiplies
    by ``weight``. Raises ValueError for an empty table or a negative weight.
    """

    def __init__(self, table: Sequence[int], weight: float, mode: str) -> None:
        super().__init__()
        if not len(table) or weight < 0:
            raise ValueError(f"feature alignment: need a non-empty table and weight >= 0, got {list(table)}, {weight}")
        self.register_buffer("table", torch.as_tensor(list(table), dtype=torch.long), persistent=False)
        self.weight, self.mode = float(weight), mode

    def forward(self, features: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """The mean CORAL over the aligned pairs of the batch: ``features`` (B, D), ``domains`` (B,)."""
        return subset_coral_penalty(features, domains, self.table)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, weight={self.weight}, table={self.table.tolist()}"
