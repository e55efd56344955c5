"""MoGE's own training terms (Rangzan et al., "Mixture of Geographical Experts"), as pure functions.

* :func:`moge_supcon_loss` -- MoGE Eq. 3, supervised contrast on the shared expert over *discovered* domains;
* :func:`importance_loss`, :func:`load_loss`, :func:`moge_aux_loss` -- the load-balancing term L_aux of the
  paper's Appendix A (after Shazeer et al., 2017: squared coefficients of variation of the experts'
  importance and of their noisy-gate load).

MoGE's diversity term (Eq. 2) is :func:`gemlab.moe.losses.cka_diversity_loss`. The tests compare every
function here with a loop-by-loop transcription of its equation.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def moge_supcon_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    domains: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """MoGE Eq. 3: the shared expert's features made invariant across the domains the router discovered.

    With q_i the L2-normalised feature of sample i and d_i its discovered domain (the expert with the largest
    routing weight, d_i = argmax_k α_k), sample i's positives P_i are the same-class samples of *another*
    domain and its negatives N_i the other-class samples of the *same* domain; only anchors with both are
    used (the set A, B = |A|). Per anchor the term is the log of the summed exponentiated positive
    similarities minus the log of the sum over P_i ∪ N_i, so

        L = -(1 / B) Σ_{i ∈ A} [ log Σ_{p ∈ P_i} exp(<q_i, p> / τ) - log Σ_{v ∈ P_i ∪ N_i} exp(<q_i, v> / τ) ].

    Unlike Khosla et al.'s mean over positives, the positives are summed inside one log; the denominator
    holds only P_i ∪ N_i, not every other sample. The paper draws A as a random subset of the valid
    anchors without saying how large: here every valid anchor is used (no random draw to seed).

    ``features`` (N, D), ``labels`` and ``domains`` (N,) long. 0 (with a gradient path) when no anchor
    is valid. Raises ValueError for a non-positive temperature.
    """
    if not temperature > 0:
        raise ValueError(f"moge supcon: temperature must be > 0, got {temperature}")
    q = F.normalize(features, dim=-1)
    similarity = (q @ q.t()) / temperature  # (N, N)
    same_class = labels[:, None] == labels[None, :]
    same_domain = domains[:, None] == domains[None, :]
    positives = same_class & ~same_domain  # never i itself: d_i = d_i
    negatives = ~same_class & same_domain  # never i itself: y_i = y_i
    anchors = positives.any(dim=1) & negatives.any(dim=1)
    if not anchors.any():
        return features.sum() * 0.0
    log_positive = torch.logsumexp(similarity.masked_fill(~positives, float("-inf")), dim=1)
    log_all = torch.logsumexp(similarity.masked_fill(~(positives | negatives), float("-inf")), dim=1)
    return -(log_positive - log_all)[anchors].mean()


def _cv_squared(x: torch.Tensor) -> torch.Tensor:
    """(STD(x) / MEAN(x))², the population STD (as Shazeer et al.'s code); 0 for one expert or a zero mean."""
    if x.numel() < 2:
        return x.sum() * 0.0
    return x.var(unbiased=False) / x.mean().pow(2).clamp_min(1e-10)


def importance_loss(alpha: torch.Tensor) -> torch.Tensor:
    """MoGE Appendix A, importance: imp_k = Σ_i α_k(r_i), L_imp = (STD(imp) / MEAN(imp))².

    ``alpha`` (N, E): each sample's routing weights (zero outside its top K). Raises nothing.
    """
    return _cv_squared(alpha.sum(dim=0))


def load_loss(scores: torch.Tensor, k: int, noise_std: float) -> torch.Tensor:
    """MoGE Appendix A, load: the expected number of samples that pick each expert under gate noise.

    With s_k(r_i) the router's cosine scores, η_K^(i) the K-th largest score of sample i and Φ the standard
    normal CDF, p_k(r_i) = 1 - Φ((η_K^(i) - s_k(r_i)) / σ) is the chance that expert k is in sample i's top
    K; load_k = Σ_i p_k(r_i) and L_load = (STD(load) / MEAN(load))². As the paper writes it, η_K is the
    K-th largest score for every expert (Shazeer et al. compare an expert in the top K with the K+1-th).

    ``scores`` (N, E). Raises ValueError for k outside 1..E or a non-positive ``noise_std``.
    """
    if not 1 <= k <= scores.shape[1] or not noise_std > 0:
        raise ValueError(f"moge load: need k in 1..{scores.shape[1]} and noise_std > 0, got {k}, {noise_std}")
    threshold = scores.topk(k, dim=1).values[:, -1:]  # (N, 1): η_K
    normal = torch.distributions.Normal(scores.new_zeros(()), scores.new_ones(()))
    probability = 1 - normal.cdf((threshold - scores) / noise_std)
    return _cv_squared(probability.sum(dim=0))


def moge_aux_loss(alpha: torch.Tensor, scores: torch.Tensor, k: int, noise_std: float) -> torch.Tensor:
    """MoGE Appendix A: L_aux = (L_imp + L_load) / 2 (see :func:`importance_loss`, :func:`load_loss`).

    Raises ValueError as :func:`load_loss` does.
    """
    return 0.5 * (importance_loss(alpha) + load_loss(scores, k, noise_std))
