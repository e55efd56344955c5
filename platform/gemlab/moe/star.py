"""STAR-style soft task-aware routing over projection heads.

Several projection heads (small MLPs) are the experts; a soft router,
conditioned on a learned embedding of the objective, mixes them into one
embedding per objective -- one for the *invariant* objective and one for the
*equivariant* one -- so the two objectives share heads where they agree and
separate where they conflict. :func:`canonical_correlation` reports how
related the two embeddings are.
"""

from __future__ import annotations

import torch
from torch import nn

TASKS = ("invariant", "equivariant")


class STARHeads(nn.Module):
    """Raises ValueError for fewer than 2 heads."""

    def __init__(self, dim: int, out_dim: int, num_heads: int = 4, hidden: int = 256) -> None:
        super().__init__()
        if num_heads < 2:
            raise ValueError(f"STAR: need at least 2 projection heads, got {num_heads}")
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)) for _ in range(num_heads)
        )
        self.task_embedding = nn.Parameter(torch.randn(len(TASKS), dim) * 0.1)
        self.router = nn.Linear(dim, num_heads)

    def forward(self, features: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``features`` (B, D) -> {task: (embedding (B, out), head weights (B, heads))}."""
        outputs = torch.stack([head(features) for head in self.heads], dim=1)  # (B, heads, out)
        result = {}
        for t, task in enumerate(TASKS):
            weights = self.router(features + self.task_embedding[t]).softmax(dim=-1)
            result[task] = ((weights.unsqueeze(-1) * outputs).sum(dim=1), weights)
        return result


def canonical_correlation(z1: torch.Tensor, z2: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """Mean canonical correlation of two embeddings of the same samples (1: linearly equivalent, 0: unrelated).

    Whitens each side (with a small ridge for stability) and takes the
    singular values of the whitened cross-covariance.
    """

    def whiten(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(dim=0)
        cov = z.t() @ z / (z.shape[0] - 1) + ridge * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        values, vectors = torch.linalg.eigh(cov)
        return z @ vectors @ torch.diag(values.rsqrt()) @ vectors.t()

    a, b = whiten(z1.double()), whiten(z2.double())
    cross = a.t() @ b / (a.shape[0] - 1)
    return torch.linalg.svdvals(cross).clamp(max=1.0).mean().to(z1.dtype)
