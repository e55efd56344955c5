"""Confidence-fused experts for long-tailed classes (DQRoute-style).

Experts specialise on class groups -- all classes, medium + tail, tail --
and each has an out-of-distribution head ``s_k(x) = sigmoid(w_k x)`` that
estimates whether the sample belongs to its group. Every token goes to every
expert, weighted by ``α_k = s_k / Σ_j s_j``: experts confident about the
sample dominate. The OOD heads learn from ``L_OOD = λ * BCE(s_k, 1[y in group k])``.
:class:`DifficultyWeights` is the run's training loss: cross-entropy with
per-class weights that favour classes the model finds hard, mixed with
inverse-frequency weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gemlab.moe.losses import ood_bce_loss
from gemlab.moe.routers.topk import check_weights
from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec, RunFacts


def class_groups(counts: Sequence[int], medium_threshold: int, tail_threshold: int) -> list[list[int]]:
    """[all classes, medium + tail (count <= medium_threshold), tail (count <= tail_threshold)]."""
    if tail_threshold > medium_threshold:
        raise ValueError(f"class groups: tail_threshold {tail_threshold} > medium_threshold {medium_threshold}")
    classes = range(len(counts))
    return [
        list(classes),
        [c for c in classes if counts[c] <= medium_threshold],
        [c for c in classes if counts[c] <= tail_threshold],
    ]


class ConfidenceRouter(nn.Module):
    """Raises ValueError unless there is one class group per expert, each within 0..num_classes-1."""

    def __init__(
        self, dim: int, num_experts: int, groups: Sequence[Sequence[int]], num_classes: int, ood_weight: float = 1.0
    ) -> None:
        super().__init__()
        if len(groups) != num_experts:
            raise ValueError(f"confidence router: {len(groups)} class groups for {num_experts} experts")
        membership = torch.zeros(num_classes, num_experts)
        for expert, group in enumerate(groups):
            if any(not 0 <= c < num_classes for c in group):
                raise ValueError(f"confidence router: group {expert} has classes outside 0..{num_classes - 1}")
            membership[list(group), expert] = 1.0
        check_weights(ood_weight=ood_weight)
        self.register_buffer("membership", membership, persistent=False)  # (classes, E): 1 if class in group
        self.ood_heads = nn.Linear(dim, num_experts)
        self.num_experts, self.ood_weight = num_experts, ood_weight

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        scores = torch.sigmoid(self.ood_heads(tokens))  # (N, E) s_k(x)
        alpha = scores / scores.sum(dim=-1, keepdim=True)
        aux = {}
        if self.training and context.labels is not None:
            aux["ood"] = self.ood_weight * ood_bce_loss(scores, self.membership[context.labels])
        every = torch.arange(self.num_experts, device=tokens.device).expand(tokens.shape[0], -1)
        return SparseRouting.from_choices(every, alpha, self.num_experts, aux)


class DifficultyWeights(nn.Module):
    """Cross-entropy with per-class weights: difficulty (smoothed error + normalised entropy) mixed with rarity.

        d_c = (1 - acc_c) + H_c / log(C)           acc_c, H_c: exponential moving averages over batches
        w_c ∝ α exp(γ d_c) / mean(exp(γ d)) + (1 - α) q_c,   q_c ∝ 1 / n_c, mean(q) = 1
    normalised to mean 1. The moving averages are buffers, so they are checkpointed with the model
    that holds this loss. Raises ValueError for momentum outside [0, 1) or α outside [0, 1].
    """

    def __init__(self, counts: Sequence[int], gamma: float = 1.0, momentum: float = 0.9, alpha: float = 0.5) -> None:
        super().__init__()
        if not 0 <= momentum < 1 or not 0 <= alpha <= 1:
            raise ValueError(f"difficulty weights: need 0 <= momentum < 1 and 0 <= alpha <= 1, got {momentum}, {alpha}")
        counts_t = torch.as_tensor(counts, dtype=torch.float32).clamp_min(1)
        quantity = 1 / counts_t
        self.register_buffer("quantity", quantity / quantity.mean())
        self.register_buffer("accuracy", torch.zeros(len(counts)))
        self.register_buffer("entropy", torch.zeros(len(counts)))
        self.gamma, self.momentum, self.alpha = gamma, momentum, alpha

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold one batch's per-class accuracy and prediction entropy into the moving averages."""
        probs = logits.softmax(dim=-1)
        correct = (probs.argmax(dim=-1) == labels).float()
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1) / torch.log(torch.tensor(float(logits.shape[1])))
        for c in labels.unique():
            seen = labels == c
            self.accuracy[c] = self.momentum * self.accuracy[c] + (1 - self.momentum) * correct[seen].mean()
            self.entropy[c] = self.momentum * self.entropy[c] + (1 - self.momentum) * entropy[seen].mean()

    def weights(self) -> torch.Tensor:
        difficulty = torch.exp(self.gamma * ((1 - self.accuracy) + self.entropy))
        mixed = self.alpha * difficulty / difficulty.mean() + (1 - self.alpha) * self.quantity
        return mixed / mixed.mean()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One training batch's loss, weighted by the averages so far; the batch is then folded into them."""
        loss = F.cross_entropy(logits, labels, weight=self.weights())
        self.update(logits.detach(), labels)
        return loss


def confidence_router(
    dim: int, facts: RunFacts, medium_threshold: int, tail_threshold: int, **options: float
) -> ConfidenceRouter:
    """The router with its class groups cut from the run's class counts at the two thresholds.

    Raises ValueError as :func:`class_groups` and :class:`ConfidenceRouter` do.
    """
    groups = class_groups(facts.class_counts, medium_threshold, tail_threshold)
    return ConfidenceRouter(dim, facts.num_experts, groups, facts.num_classes, **options)


SPEC = RouterSpec(
    name="confidence",
    build=confidence_router,
    criterion=lambda facts, **weights: DifficultyWeights(facts.class_counts, **weights),
    criterion_keys=("gamma", "alpha", "momentum"),
)
