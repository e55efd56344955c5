"""Auxiliary losses of the routers, as pure functions.

Each docstring states the equation it implements; the tests compare each
function with a direct, loop-by-loop transcription of that equation.
"""

from __future__ import annotations

import torch


def balance_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Switch / GShard load-balancing loss.

        L_bal = E * sum_e f_e * P_e,
        f_e = (1 / (N k)) * #{(i, s): chosen[i, s] = e}   (fraction of routed slots on expert e)
        P_e = (1 / N) * sum_i probs[i, e]                  (mean router probability of expert e)

    ``probs`` (N, E) softmax outputs; ``chosen`` (N, k) expert indices. Equals
    1 when routing is uniform and grows as tokens concentrate.
    """
    e = probs.shape[1]
    fraction = torch.bincount(chosen.reshape(-1), minlength=e).to(probs.dtype) / chosen.numel()
    return e * torch.sum(fraction * probs.mean(dim=0))


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Router z-loss (ST-MoE): L_z = (1 / N) * sum_i (log sum_e exp(logits[i, e]))^2.

    Keeps router logits small, which stabilises the softmax in low precision.
    """
    return torch.logsumexp(logits, dim=-1).pow(2).mean()
