"""FFN experts (Linear-GELU-Linear) held as batched weights.

The experts see their inputs as contiguous *segments* of one matrix, in
expert order, and run one dense matmul pair per non-empty segment. An expert
that receives nothing is not part of the graph at all, so it gets exactly
zero gradient -- the property GEM relies on to keep experts specialised.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Experts(nn.Module):
    """``num_experts`` independent FFNs ``dim -> hidden -> dim``."""

    def __init__(self, num_experts: int, dim: int, hidden: int) -> None:
        super().__init__()
        if num_experts < 1 or dim < 1 or hidden < 1:
            raise ValueError(f"experts: num_experts, dim and hidden must be >= 1, got {num_experts}, {dim}, {hidden}")
        self.num_experts, self.dim, self.hidden = num_experts, dim, hidden
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.empty(num_experts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation, expert by expert."""
        for weight, bias, fan_in in ((self.w1, self.b1, self.dim), (self.w2, self.b2, self.hidden)):
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, inputs: torch.Tensor, segment_sizes: list[int]) -> torch.Tensor:
        """Run expert e on rows ``sum(sizes[:e]) .. sum(sizes[:e+1])`` of ``inputs`` (rows, dim)."""
        # unbind, not indexing: one backward node stacks every expert's gradient once, where
        # indexing w1[e] per expert would build (and sum) a full-size zero gradient per expert.
        w1, b1, w2, b2 = self.w1.unbind(0), self.b1.unbind(0), self.w2.unbind(0), self.b2.unbind(0)
        outputs, start = [], 0
        for expert, size in enumerate(segment_sizes):
            if size == 0:
                continue
            segment = inputs[start : start + size]
            hidden = F.gelu(torch.addmm(b1[expert], segment, w1[expert]))
            outputs.append(torch.addmm(b2[expert], hidden, w2[expert]))
            start += size
        if not outputs:
            return inputs.new_zeros(0, self.dim)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def run_one(self, expert: int, inputs: torch.Tensor) -> torch.Tensor:
        """Expert ``expert`` on every row (for diagnostics such as forcing tokens through all experts)."""
        hidden = F.gelu(torch.addmm(self.b1[expert], inputs, self.w1[expert]))
        return torch.addmm(self.b2[expert], hidden, self.w2[expert])
