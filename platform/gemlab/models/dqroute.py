"""DQRoute's classifier: three expert classifiers on the pooled features, fused by their OOD confidences.

    head = DQRouteHead(dim, groups=[all, medium + tail, tail], counts=class_counts)
    logits, routing = head(features, labels=labels)   # logits = log P(y|x) (Eq. 6); routing.aux_losses: cls, ood

DQRoute (seed 004, Sec. 3.2-3.3) shares one feature extractor and gives each
expert its own classification head, so its experts are classifiers, not the
FFNs of MoE layers: the model's trunk is dense and this head replaces its
linear classifier. Each expert ``E_k`` has

* a classifier ``f_k``, trained on the samples of its class group ``C_k``
  (Eq. 4: the mask ``b_k(x) = 1[y in C_k]`` in the loss below);
* a confidence head ``s_k(x) = sigmoid(ℓ_k(x))``; the routing weights are
  ``α_k = s_k / Σ_i s_i`` (Eq. 5) and the prediction
  ``P(y|x) = Σ_k α_k softmax(f_k(x))_y`` (Eq. 6).

The training objective (Eq. 9) is ``L_cls + λ_OOD L_OOD`` with

    L_cls = mean_i Σ_k b_k(x_i) α_k(x_i) w̃_{y_i} CE(f_k(x_i), y_i)      (Eq. 10, with Eq. 4's D_k)

and ``L_OOD`` the per-expert OOD loss summed over experts (Eq. 8,
:mod:`gemlab.moe.ood_losses`). ``w̃`` are the class weights of
:class:`~gemlab.moe.difficulty.ClassDifficulty` (Eq. 1-3), fed by the fused
prediction of every training batch. Both terms come back as the routing's
auxiliary losses, because only the head sees every expert's logits.

Where the paper is silent: ``α`` enters ``L_cls`` as a constant (detached).
With the ``b_k`` mask a gradient through ``α`` would lower the loss by moving
weight *away* from the experts that own the sample (masked terms cost
nothing); so the confidence heads learn from ``L_OOD`` alone, the classifiers
from ``L_cls``.

Ablations (Fig. 3-4): ``ood_only`` keeps the experts and their routing and
drops the class weights (``w̃ = 1``); ``difficulty_only`` and
``quantity_only`` use one classifier (the general expert gets all the
weight; no confidence heads, no ``L_OOD``) weighted by difficulty alone
(Eq. 3 with ``α = 1``) or by quantity alone (``α = 0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gemlab.moe.difficulty import ClassDifficulty
from gemlab.moe.experts import ExpertBank
from gemlab.moe.ood_losses import OOD_LOSSES, ood_loss
from gemlab.moe.routing import SparseRouting

ABLATIONS = ("ood_only", "difficulty_only", "quantity_only")
SINGLE_EXPERT = {"difficulty_only": 1.0, "quantity_only": 0.0}  # ablation -> the α of Eq. 3 it fixes


class DQRouteExpert(nn.Module):
    """One expert ``E_k``: its classifier ``f_k`` (dim -> C logits) and its OOD head (dim -> ``ℓ_k``)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, num_classes)
        self.confidence = nn.Linear(dim, 1)


class DQRouteHead(nn.Module):
    """DQRoute's experts, confidence heads and class weights; see the module docstring for the equations.

    ``groups`` are the class groups ``C_k``, one per expert; ``counts`` the training images per class.
    The experts are an :class:`ExpertBank`, so checkpoints keep one shard per expert, as for every
    other router; the single-expert ablations keep all of them (the run's expert count) and give the
    general expert all the weight (``α = (1, 0, 0)``). The difficulty keys (``gamma``, ``lam``,
    ``alpha``, ``momentum``, ``a_max``, ``epoch_steps``) go to :class:`ClassDifficulty`. Raises
    ValueError for groups with classes outside ``0..len(counts)-1``, an unknown ``ood_loss`` or
    ``ablation``, a negative ``ood_weight``, and what :class:`ClassDifficulty` raises.
    """

    def __init__(
        self,
        dim: int,
        groups: Sequence[Sequence[int]],
        counts: Sequence[int],
        *,
        ood_weight: float = 1.0,
        ood_loss: str = "bce",
        ablation: str | None = None,
        **difficulty: float | int | None,
    ) -> None:
        super().__init__()
        classes = len(counts)
        if ood_loss not in OOD_LOSSES:
            raise ValueError(f"ood_loss={ood_loss!r}: choose one of {sorted(OOD_LOSSES)}")
        if ablation is not None and ablation not in ABLATIONS:
            raise ValueError(f"ablation={ablation!r}: choose null or one of {list(ABLATIONS)}")
        if ood_weight < 0:
            raise ValueError(f"ood_weight={ood_weight}: need >= 0")
        membership = torch.zeros(classes, len(groups), dtype=torch.bool)
        for expert, group in enumerate(groups):
            if any(not 0 <= c < classes for c in group):
                raise ValueError(f"class group {expert} has classes outside 0..{classes - 1}")
            membership[list(group), expert] = True
        if ablation in SINGLE_EXPERT:
            difficulty = {**difficulty, "alpha": SINGLE_EXPERT[ablation]}
        self.register_buffer("membership", membership, persistent=False)  # (C, E): b_k for each class
        self.experts = ExpertBank(len(groups), lambda: DQRouteExpert(dim, classes))
        self.routed = ablation not in SINGLE_EXPERT
        self.difficulty = ClassDifficulty(counts, **difficulty)
        self.num_experts, self.num_classes = len(groups), classes
        self.ood_weight, self.ood_loss, self.reweight = ood_weight, ood_loss, ablation != "ood_only"

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, SparseRouting]:
        """(B, dim) pooled features -> log P(y|x) (B, C) and a routing whose counts are the summed ``α_k``.

        With ``labels`` in training mode the routing carries ``cls`` (Eq. 10) and ``ood`` (λ_OOD · Eq. 8),
        and the batch's fused prediction is added to the class statistics.
        """
        experts = [self.experts.expert(k) for k in range(self.num_experts)]
        log_probs = torch.stack([e.classifier(features) for e in experts], dim=1).log_softmax(dim=-1)  # (B, E, C)
        if self.routed:
            ood_logits = torch.cat([e.confidence(features) for e in experts], dim=1)  # (B, E) ℓ_k
            scores = torch.sigmoid(ood_logits)
            alpha = scores / scores.sum(dim=-1, keepdim=True)  # Eq. 5
        else:  # the single-expert ablations: the general expert alone
            ood_logits, alpha = None, features.new_zeros(len(features), self.num_experts)
            alpha[:, 0] = 1.0
        fused = (alpha.unsqueeze(-1) * log_probs.exp()).sum(dim=1)  # Eq. 6: (B, C)
        aux: dict[str, torch.Tensor] = {}
        if self.training and labels is not None:
            aux = self._losses(log_probs, ood_logits, alpha, labels)
            self.difficulty.observe(fused.detach(), labels)
        routing = SparseRouting(None, None, [], alpha.detach().sum(dim=0), aux)
        return fused.clamp_min(1e-12).log(), routing

    def _losses(
        self, log_probs: torch.Tensor, ood_logits: torch.Tensor | None, alpha: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        member = self.membership[labels].to(log_probs.dtype)  # (B, E) b_k(x)
        weight = self.difficulty.class_weights()[labels] if self.reweight else torch.ones_like(member[:, 0])
        index = labels.view(-1, 1, 1).expand(-1, self.num_experts, 1)
        cross_entropy = -log_probs.gather(-1, index).squeeze(-1)  # (B, E) CE(f_k(x), y)
        losses = {"cls": (member * alpha.detach() * weight.unsqueeze(1) * cross_entropy).sum(dim=1).mean()}
        if ood_logits is not None:
            losses["ood"] = self.ood_weight * ood_loss(self.ood_loss, ood_logits, member, log_probs)
        return losses
