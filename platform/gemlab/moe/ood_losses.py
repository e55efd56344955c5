"""The OOD losses DQRoute trains its experts' confidence heads with (seed 004, Eq. 7-8 and Table 6).

Each expert k has a confidence ``s_k(x) = sigmoid(ℓ_k(x))`` that the sample
belongs to its class group, supervised by ``b_k(x) = 1[y in C_k]``. Eq. 8
sums the per-expert loss over the experts (and the batch mean is the
expectation over samples). Table 6 compares four per-expert losses; the
paper defines only BCE (Eq. 7), so the other three are the usual forms of
their names, written down here:

* ``bce`` -- Eq. 7: ``-[b log s + (1 - b) log(1 - s)]``.
* ``focal`` -- Lin et al.'s focal loss on the same binary target with
  ``γ_f = 2`` (their default): ``-[b (1 - s)^2 log s + (1 - b) s^2 log(1 - s)]``.
* ``margin`` -- a hinge on the confidence logit with margin 1:
  ``b max(0, 1 - ℓ) + (1 - b) max(0, 1 + ℓ)``.
* ``entropy`` -- Eq. 7 plus Hendrycks et al.'s outlier-exposure term: on a
  sample outside its group, the expert's class prediction is pulled towards
  uniform, ``(1 - b) · (-(1/C) Σ_c log p_k(c | x))``, so an expert is also
  *uncertain* where it is not competent.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

FOCAL_GAMMA = 2.0
MARGIN = 1.0

PerExpertLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _bce(logits: torch.Tensor, member: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, member, reduction="none")


def _focal(logits: torch.Tensor, member: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(logits)
    log_s, log_not_s = F.logsigmoid(logits), F.logsigmoid(-logits)
    return -(member * (1 - s).pow(FOCAL_GAMMA) * log_s + (1 - member) * s.pow(FOCAL_GAMMA) * log_not_s)


def _margin(logits: torch.Tensor, member: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    return member * F.relu(MARGIN - logits) + (1 - member) * F.relu(MARGIN + logits)


def _entropy(logits: torch.Tensor, member: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    towards_uniform = -log_probs.mean(dim=-1)  # (B, E): cross-entropy from uniform to p_k(· | x)
    return _bce(logits, member, log_probs) + (1 - member) * towards_uniform


OOD_LOSSES: dict[str, PerExpertLoss] = {"bce": _bce, "entropy": _entropy, "focal": _focal, "margin": _margin}


def ood_loss(kind: str, logits: torch.Tensor, member: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """DQRoute Eq. 8: the per-expert OOD loss ``kind`` summed over experts, averaged over the batch.

    ``logits`` (B, E) are the confidence logits ``ℓ_k`` (``s_k = sigmoid(ℓ_k)``),
    ``member`` (B, E) the targets ``b_k``, ``log_probs`` (B, E, C) each expert's
    log class probabilities (only ``entropy`` reads them). Raises ValueError for
    an unknown ``kind``, naming the known ones.
    """
    if kind not in OOD_LOSSES:
        raise ValueError(f"ood_loss={kind!r}: choose one of {sorted(OOD_LOSSES)}")
    return OOD_LOSSES[kind](logits, member.to(logits.dtype), log_probs).sum(dim=1).mean()
