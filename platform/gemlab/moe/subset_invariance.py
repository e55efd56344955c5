"""Subset-shared invariance: align features only among the domains that share an expert.

Domains the plan puts on one expert should look alike to that expert; a
global alignment penalty would also pull together domains the plan keeps
apart on purpose. So CORAL is applied to pairs of domains in the batch that
share an expert in the plan, averaged over those pairs.
"""

from __future__ import annotations

import torch

from gemlab.moe.losses import coral_loss


def subset_coral_penalty(features: torch.Tensor, domains: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean CORAL over pairs of domains present (>= 2 samples each) that ``table`` maps to the same expert.

    ``features`` (B, D), ``domains`` (B,), ``table`` (num_domains,) domain -> expert. 0 when no pair qualifies.
    """
    present = [d for d in domains.unique().tolist() if int((domains == d).sum()) >= 2]
    penalties = [
        coral_loss(features[domains == a], features[domains == b])
        for i, a in enumerate(present)
        for b in present[i + 1 :]
        if table[a] == table[b]
    ]
    return torch.stack(penalties).mean() if penalties else features.sum() * 0.0
