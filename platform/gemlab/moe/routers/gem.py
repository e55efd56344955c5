"""GEM: a fixed lookup from domain id (or class id) to expert, taken from a Plan.

No parameters and no auxiliary loss: the plan was solved globally before
training. Every token of a sample goes to its sample's expert, so a batch
from one domain runs exactly one expert, and a mixed batch is grouped by
*sample* (the stable sort keeps each sample's tokens together).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Literal

import torch
from torch import nn

from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec


def expert_table(table: Sequence[int], num_experts: int, router: str) -> torch.Tensor:
    """A task -> expert table as a tensor; raises ValueError if empty or naming an expert outside 0..E-1."""
    table = torch.as_tensor(list(table), dtype=torch.long)
    if table.numel() == 0 or int(table.min()) < 0 or int(table.max()) >= num_experts:
        raise ValueError(f"{router} router: table entries must be experts 0..{num_experts - 1}, got {table.tolist()}")
    return table


@contextmanager
def forced_table(owner: nn.Module, expert: int, num_experts: int, what: str) -> Iterator[nn.Module]:
    """``owner.table`` (a task -> expert buffer) sends every task to ``expert`` inside the block, restored on exit.

    Restored also when the block raises. Raises ValueError naming ``what`` for an expert outside 0..num_experts-1.
    """
    if not 0 <= expert < num_experts:
        raise ValueError(f"{what}: cannot force expert {expert}; experts are 0..{num_experts - 1}")
    table = owner.table
    owner.table = torch.full_like(table, expert)
    try:
        yield owner
    finally:
        owner.table = table


class GEMRouter(nn.Module):
    """Routes by ``context.domain`` (``key="domain"``) or ``context.labels`` (``key="label"``, class-level GEM).

    Raises ValueError for an empty table or an entry outside 0..num_experts-1,
    and, when called, if the context lacks the key or holds an id the table does not cover.
    """

    def __init__(self, table: Sequence[int], num_experts: int, key: Literal["domain", "label"] = "domain") -> None:
        super().__init__()
        self.register_buffer("table", expert_table(table, num_experts, "gem"), persistent=False)
        self.num_experts, self.key = num_experts, key

    def forced(self, expert: int) -> AbstractContextManager[GEMRouter]:
        """Every id goes to ``expert`` inside the block (the cross-expert matrix); the table is restored on exit.

        Restored also when the block raises. Raises ValueError for an expert outside 0..num_experts-1.
        """
        return forced_table(self, expert, self.num_experts, "gem router")

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        ids = context.domain if self.key == "domain" else context.labels
        if ids is None:
            raise ValueError(f"gem router: routing by {self.key} needs `{self.key}` ids for every sample")
        low, high = torch.aminmax(ids)
        if int(low) < 0 or int(high) >= len(self.table):
            raise ValueError(
                f"gem router: {self.key} ids must be in 0..{len(self.table) - 1}, got {ids.unique().tolist()}"
            )
        expert = self.table[ids].unsqueeze(1)  # (N, 1)
        return SparseRouting.from_choices(expert, None, self.num_experts)


SPEC = RouterSpec(
    name="gem",
    plan_level="domain",
    domain_table=lambda facts: facts.plan_table(),
    build=lambda dim, facts: GEMRouter(facts.plan_table(), facts.num_experts),
)
