"""The decoder's learned content queries and prediction heads: one set, or one per expert (GEMGR-DINO).

    queries = QuerySet(dim, num_classes, num_queries, layers)            # Mixed-DINO, GEM-DINO
    queries = ExpertQuerySets(table, num_experts, lambda: QuerySet(...), local_experts)   # GEMGR-DINO
    for query_set, index in queries.assign(domain):                      # index None = the whole batch
        ...  # decode samples ``index`` with query_set.content and query_set.heads

GEMGR-DINO (§3.4, variant 2) keeps the encoder and decoder layers dense and
specialises their input and output: each expert owns content queries and
class/box heads, and a sample of domain d is decoded with those of expert
``table[d]`` -- the plan's domain -> expert map. The sets live in one
:class:`ExpertBank`, so an expert-parallel worker holds only its own and
gradient sync and checkpoint shards find them by expert id, exactly as they
find an MoE layer's FFN experts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from torch import nn

from gemlab.models.detection.heads import PredictionHeads
from gemlab.moe.experts import ExpertBank
from gemlab.moe.routers.gem import expert_table, forced_table
from gemlab.moe.routing import SparseRouting


class QuerySet(nn.Module):
    """``num_queries`` learned content vectors and one class and box head per decoder layer."""

    def __init__(self, dim: int, num_classes: int, num_queries: int, layers: int) -> None:
        super().__init__()
        self.content = nn.Embedding(num_queries, dim)
        self.heads = PredictionHeads(dim, num_classes, layers)

    def assign(self, domain: torch.Tensor | None) -> list[tuple[QuerySet, torch.Tensor | None]]:
        """Every sample uses this set: ``[(self, None)]``. Raises nothing."""
        return [(self, None)]

    def routing(self, domain: torch.Tensor | None, num_queries: int) -> SparseRouting | None:
        """None: one set routes nothing."""
        return None


class ExpertQuerySets(nn.Module):
    """One :class:`QuerySet` per expert (``build`` makes one), chosen per sample by ``table[domain]``.

    Raises ValueError for an empty table or one naming an expert outside 0..num_experts-1, and
    what :class:`ExpertBank` raises for bad local experts.
    """

    def __init__(
        self,
        table: Sequence[int],
        num_experts: int,
        build: Callable[[], QuerySet],
        local_experts: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("table", expert_table(table, num_experts, "gemgr queries"), persistent=False)
        self.bank = ExpertBank(num_experts, build, local_experts)

    def assign(self, domain: torch.Tensor | None) -> list[tuple[QuerySet, torch.Tensor]]:
        """(query set, sample indices) per expert that this batch uses, in expert order.

        Raises ValueError without domains or for a domain the table does not cover, and
        RuntimeError when a sample is routed to an expert this worker does not hold.
        """
        if domain is None:
            raise ValueError("gemgr queries: choosing an expert's queries needs `domain` for every sample")
        if domain.numel() and (int(domain.min()) < 0 or int(domain.max()) >= len(self.table)):
            raise ValueError(f"gemgr queries: domain ids must be in 0..{len(self.table) - 1}, got {domain.tolist()}")
        experts = self.table.to(domain.device)[domain]  # (B,)
        return [
            (self.bank.expert(int(e)), torch.nonzero(experts == e).squeeze(1)) for e in torch.unique(experts).tolist()
        ]

    def routing(self, domain: torch.Tensor, num_queries: int) -> SparseRouting:
        """Which expert's set each sample's ``num_queries`` queries used, recorded as an MoE layer's routing is.

        Only its ``counts`` matter (the routing heatmap's row of a domain): nothing is dispatched through it.
        """
        experts = self.table.to(domain.device)[domain].repeat_interleave(num_queries)  # (B * Q,), sorted per sample
        return SparseRouting(None, None, [], torch.bincount(experts, minlength=self.bank.num_experts))

    def forced(self, expert: int) -> AbstractContextManager[ExpertQuerySets]:
        """Every domain uses ``expert``'s queries and heads inside the block (the cross-expert matrix).

        The table is restored on exit, also when the block raises. Raises ValueError for an expert
        outside 0..num_experts-1.
        """
        return forced_table(self, expert, self.bank.num_experts, "gemgr queries")
