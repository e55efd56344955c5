"""STAR (seed 003): projection heads as experts, mixed per objective by soft task-aware routing.

STAR learns an *invariant* embedding (views of one image agree) and an
*equivariant* one (the transformation between views can be read off it)
from the same trunk. Instead of one projection head per objective, every
head is an expert and each objective takes a soft mixture of all of them,
so a head can serve both objectives (shared information) or one alone
(task-specific information). The paper is given to us as a summary only;
the choices below are ours, and ``docs/methods/star.md`` lists them:

- Routing is MMoE's multi-gate form (Ma et al., KDD 2018, §4.2): objective
  t has its own linear gate on the trunk feature x,
  g_t(x) = softmax(W_t x + b_t), and its embedding is
  z_t(x) = Σ_i g_t(x)_i h_i(x). The authors' released code gates the same
  way (one linear gate per task on the backbone feature).
- ``routing="separate"`` is the baseline STAR is compared with: one head per
  objective, hard-assigned (head 0 invariant, head 1 equivariant).

The two losses are the standard ones named in each docstring, and
:func:`canonical_correlation` measures how redundant the two embeddings are
(STAR's evidence that routing reduces redundancy is a lower value).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from gemlab.moe.experts import ExpertBank

TASKS = ("invariant", "equivariant")
ROUTINGS = ("task_aware", "separate")


class HeadMix(NamedTuple):
    embedding: torch.Tensor  # (B, out_dim): the objective's embedding
    weights: torch.Tensor  # (B, heads): the weight of each head in it (rows sum to 1)


class STARHeads(nn.Module):
    """``num_heads`` MLP projection heads ``dim -> hidden -> out_dim`` and one gate per objective.

    Raises ValueError for fewer than 2 heads, an unknown ``routing``, or ``routing="separate"``
    with other than 2 heads (one per objective is what separate heads means).
    """

    def __init__(
        self, dim: int, out_dim: int, num_heads: int = 4, hidden: int = 256, routing: str = "task_aware"
    ) -> None:
        super().__init__()
        if num_heads < 2:
            raise ValueError(f"STAR: need at least 2 projection heads, got {num_heads}")
        if routing not in ROUTINGS:
            raise ValueError(f"STAR: routing {routing!r}: expected one of {ROUTINGS}")
        if routing == "separate" and num_heads != len(TASKS):
            raise ValueError(f"STAR: separate heads are one per objective: need {len(TASKS)} heads, got {num_heads}")
        self.routing = routing
        # an ExpertBank, so the engine's gradient sync and checkpoint shards find each head by expert id
        self.heads = ExpertBank(
            num_heads, lambda: nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        )
        # a gate per objective (MMoE); the separate baseline has none: its weights are fixed one-hot rows
        self.gates = nn.ModuleList(nn.Linear(dim, num_heads) for _ in TASKS) if routing == "task_aware" else None

    def forward(self, features: torch.Tensor) -> dict[str, HeadMix]:
        """``features`` (B, D) -> {objective: HeadMix(embedding (B, out), weights (B, heads))}."""
        num_heads = self.heads.num_experts
        outputs = torch.stack([self.heads.expert(j)(features) for j in range(num_heads)], dim=1)  # (B, heads, out)
        result = {}
        for t, task in enumerate(TASKS):
            if self.gates is None:
                weights = F.one_hot(torch.full(features.shape[:1], t, device=features.device), num_heads)
                weights = weights.to(outputs.dtype)
            else:
                weights = self.gates[t](features).softmax(dim=-1)
            result[task] = HeadMix((weights.unsqueeze(-1) * outputs).sum(dim=1), weights)
        return result


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al., ICML 2020, Eq. 1), averaged over all 2N anchors.

    With u the 2N L2-normalised embeddings (both views of N images) and
    s_ik = u_i · u_k / τ, the loss of anchor i whose other view is j is
    ℓ(i, j) = −log( exp(s_ij) / Σ_{k ≠ i} exp(s_ik) ), and
    L = (1 / 2N) Σ_n [ℓ(n, n + N) + ℓ(n + N, n)]: every other image of the
    batch, in either view, is a negative. Raises nothing.
    """
    n = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, d)
    logits = (u @ u.t() / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=u.device), -torch.inf)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(u.device)
    return F.cross_entropy(logits, targets)


def transformation_regression(predicted: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
    """AugSelf's augmentation-aware loss (Lee et al., NeurIPS 2021): predict how two views differ.

    ``predicted`` (N, P) is φ(e₁, e₂), the predictor's output from the two views' equivariant
    embeddings, and ``relative`` (N, P) is ω₂ − ω₁, the difference of the views' augmentation
    parameters; L = (1 / N) Σ_n ‖φ(e₁ₙ, e₂ₙ) − (ω₂ₙ − ω₁ₙ)‖². Raises nothing.
    """
    return (predicted - relative).pow(2).sum(dim=1).mean()


def canonical_correlation(z1: torch.Tensor, z2: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """Mean canonical correlation of two embeddings of the same samples (1: linearly equivalent, 0: unrelated).

    The canonical correlations are the singular values of Σ₁₁^{-1/2} Σ₁₂ Σ₂₂^{-1/2}
    (Hotelling, 1936), Σ the sample covariances. Each Σᵢᵢ gets a ridge of ``ridge`` times its mean
    variance, so the value does not depend on the embeddings' scale (as CCA itself does not) and a
    rank-deficient side stays invertible. Raises nothing.
    """

    def whiten(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(dim=0)
        cov = z.t() @ z / (z.shape[0] - 1)
        cov = cov + ridge * cov.diagonal().mean() * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        values, vectors = torch.linalg.eigh(cov)
        return z @ vectors @ torch.diag(values.rsqrt()) @ vectors.t()

    a, b = whiten(z1.double()), whiten(z2.double())
    cross = a.t() @ b / (a.shape[0] - 1)
    return torch.linalg.svdvals(cross).clamp(max=1.0).mean().to(z1.dtype)
