"""FFN experts (Linear-GELU-Linear), one parameter set per expert.

The experts see their inputs as contiguous *segments* of one matrix, in
expert order, and run one dense matmul pair per non-empty segment. An expert
that receives nothing is not part of the graph at all, so its gradient stays
``None`` -- the property GEM relies on to keep experts specialised.

Each expert owns its own parameters (``members.<id>.w1`` ...) rather than a slice
of one batched tensor, so that an expert-parallel worker can hold any subset
of the experts (``local_experts``), and optimizer state, gradient
all-reduces and checkpoint shards all follow the expert id: an expert moved
to another worker on an elastic restart carries exactly its own tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ExpertFFN(nn.Module):
    """One expert ``dim -> hidden -> dim``, initialised like a pair of ``nn.Linear``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(dim, hidden))
        self.b1 = nn.Parameter(torch.empty(hidden))
        self.w2 = nn.Parameter(torch.empty(hidden, dim))
        self.b2 = nn.Parameter(torch.empty(dim))
        for weight, bias, fan_in in ((self.w1, self.b1, dim), (self.w2, self.b2, hidden)):
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b2, F.gelu(torch.addmm(self.b1, inputs, self.w1)), self.w2)


class ExpertBank(nn.Module):
    """One module per expert, of which this bank holds ``local_experts`` (None: all), in ``members``.

    Every expert's initialisation is drawn in turn from the global RNG, kept
    or not: a worker holding experts {2, 3} therefore has the very weights a
    single process holding all experts has, and every module built after
    this one draws the same numbers on every worker. Whatever an expert owns
    -- an FFN here, GEMGR-DINO's object queries and prediction heads -- lives
    in a bank, so gradient sync, placement and checkpoint shards find it by
    expert id (:func:`gemlab.engine.parallel.expert_parameters`) whatever
    the model. Raises ValueError for ``num_experts`` < 1 or local experts
    outside 0..num_experts-1.
    """

    def __init__(
        self, num_experts: int, build: Callable[[], nn.Module], local_experts: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"experts: num_experts must be >= 1, got {num_experts}")
        local = range(num_experts) if local_experts is None else sorted(set(local_experts))
        if any(not 0 <= j < num_experts for j in local):
            raise ValueError(f"experts: local experts {list(local)} must be in 0..{num_experts - 1}")
        self.num_experts, self.local_experts = num_experts, tuple(local)
        members = {}
        for expert in range(num_experts):
            module = build()  # drawn whether kept or not: see the class docstring
            if expert in self.local_experts:
                members[str(expert)] = module
        self.members = nn.ModuleDict(members)

    def expert(self, expert: int) -> nn.Module:
        """Expert ``expert``; raises RuntimeError if this bank does not hold it (a routing/placement mismatch)."""
        key = str(expert)
        if key not in self.members:
            raise RuntimeError(
                f"experts: work was routed to expert {expert}, which is not held here "
                f"(local experts {list(self.local_experts)})"
            )
        return self.members[key]


class Experts(ExpertBank):
    """``num_experts`` independent FFNs ``dim -> hidden -> dim`` (an :class:`ExpertBank` of :class:`ExpertFFN`).

    Raises ValueError for sizes < 1 or local experts outside 0..num_experts-1.
    """

    def __init__(self, num_experts: int, dim: int, hidden: int, local_experts: Sequence[int] | None = None) -> None:
        if num_experts < 1 or dim < 1 or hidden < 1:
            raise ValueError(f"experts: num_experts, dim and hidden must be >= 1, got {num_experts}, {dim}, {hidden}")
        super().__init__(num_experts, lambda: ExpertFFN(dim, hidden), local_experts)
        self.dim, self.hidden = dim, hidden

    def forward(self, inputs: torch.Tensor, segment_sizes: list[int]) -> torch.Tensor:
        """Run expert e on rows ``sum(sizes[:e]) .. sum(sizes[:e+1])`` of ``inputs`` (rows, dim)."""
        outputs, start = [], 0
        for expert, size in enumerate(segment_sizes):
            if size == 0:
                continue
            outputs.append(self.expert(expert)(inputs[start : start + size]))
            start += size
        if not outputs:
            return inputs.new_zeros(0, self.dim)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def run_one(self, expert: int, inputs: torch.Tensor) -> torch.Tensor:
        """Expert ``expert`` on every row (for diagnostics such as forcing tokens through all experts)."""
        return self.expert(expert)(inputs)
