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


def l1_gate_loss(gates: torch.Tensor) -> torch.Tensor:
    """REMoE's sparsity term: L1 = (1 / N) * sum_i sum_e |g_ie| (gates are ReLU outputs, so |g| = g)."""
    return gates.abs().sum(dim=-1).mean()


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=0, keepdim=True)
    return x @ x.t()


def cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA (Kornblith et al., 2019) of two representations of the same n inputs.

        CKA(X, Y) = <K_X, K_Y>_F / (||K_X||_F ||K_Y||_F),  K = (HX)(HX)^T, H = I - 11^T / n

    1 for representations equal up to rotation and isotropic scaling; near 0 for unrelated ones.
    """
    kx, ky = _centred_gram(x), _centred_gram(y)
    return (kx * ky).sum() / (kx.norm() * ky.norm()).clamp_min(1e-12)


def cka_diversity_loss(outputs: list[torch.Tensor]) -> torch.Tensor:
    """MoGE Eq. 2, the diversity term: the mean linear CKA over unordered pairs of experts' outputs on the
    same t tokens.

    L_CKA = (2 / (E (E - 1))) * sum_{a < b} CKA(O_a, O_b)

    The paper writes CKA in feature space, ||H_a^T H_b||_F^2 / (||H_a^T H_a||_F ||H_b^T H_b||_F) with
    column-centred H; :func:`cka`'s Gram form is the same number (<K_a, K_b>_F = ||H_a^T H_b||_F^2).
    """
    pairs = [cka(outputs[a], outputs[b]) for a in range(len(outputs)) for b in range(a + 1, len(outputs))]
    return torch.stack(pairs).mean()


def coral_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Deep CORAL (Sun & Saenko, 2016), Eq. 1: L = ||C_a - C_b||_F^2 / (4 d^2) for d-dimensional features.

    C is each side's unbiased feature covariance, Eq. 2: C = (D^T D - (1^T D)^T (1^T D) / n) / (n - 1)
    for an (n, d) batch D (``torch.cov``); each side needs n >= 2 rows.
    """
    d = a.shape[1]
    return (torch.cov(a.t()) - torch.cov(b.t())).pow(2).sum() / (4 * d * d)
