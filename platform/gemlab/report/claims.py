"""Per-expert true and false positive rates of routing: GEM Fig. 8's comparison of how specialised experts are.

The paper calls it a true positive when an expert "claims" an input of a
dataset assigned to it, and a false positive when it claims an input of a
dataset that is not. gemlab reads this from what every run records at each
evaluation, the share ``L[d, e]`` of domain d's routed tokens that expert e
received (``expert_load/<e>``), and defines:

* **assigned datasets**: A_e = {d : e = argmax_j L[d, j]}, the domains of
  which e receives the largest share (ties to the lower expert). Under GEM
  this is the plan's map π⁻¹(e); a learned router is judged against the
  specialisation it reached itself, not against a plan it never saw;
* **true positive rate** TPR_e = mean over d ∈ A_e of L[d, e]: the share of
  its own datasets' tokens the expert claims;
* **false positive rate** FPR_e = mean over d ∉ A_e of L[d, e]: the share of
  the other datasets' tokens it claims.

Both are means over datasets, so a small dataset weighs as much as a large
one (as each of the paper's eight panels is one dataset pair). A token is
claimed when the router dispatches it to the expert (with top-k, each of
its k experts claims it): the decision, not a score, so each expert is one
operating point in ROC space rather than a curve. An expert that receives
the largest share of no domain has no TPR and is counted apart
(``experts with a dataset``). GEM's deterministic map puts every expert at
(0, 1) by construction; a router that spreads every domain evenly (Soft
MoE's slots) sits on the diagonal at (1/E, 1/E).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gemlab.report.results import domains_of, selected
from gemlab.report.tables import Table
from gemlab.results_schema import EXPERT_LOAD

TPR, FPR, EXPERTS_WITH_A_DATASET = "TPR", "FPR", "experts with a dataset"


def expert_claims(loads: np.ndarray) -> pd.DataFrame:
    """One row per expert with a dataset: ``expert``, ``TPR`` and ``FPR`` of the domain × expert shares ``loads``.

    Rows of ``loads`` without a finite share (a domain the run did not route) are left out; an expert
    that every remaining domain is assigned to has no FPR (NaN). Raises nothing.
    """
    loads = loads[np.isfinite(loads).all(axis=1)]
    if not len(loads):
        return pd.DataFrame(columns=["expert", TPR, FPR])
    owner = loads.argmax(axis=1)
    rows = []
    for expert in sorted(set(owner.tolist())):
        mine = owner == expert
        false = float(loads[~mine, expert].mean()) if (~mine).any() else float("nan")
        rows.append({"expert": expert, TPR: float(loads[mine, expert].mean()), FPR: false})
    return pd.DataFrame(rows)


def claim_points(frame: pd.DataFrame, select: str | None = None) -> pd.DataFrame:
    """Each selected run's experts as (method, seed, expert, TPR, FPR), at the last evaluation; raises nothing."""
    picked = selected(frame, select)
    part = picked[picked["metric"].str.startswith(f"{EXPERT_LOAD}/")]
    part = part.assign(expert=part["metric"].str.removeprefix(f"{EXPERT_LOAD}/").astype(int))
    points = []
    for (method, seed), rows in part.groupby(["method", "seed"], sort=True):
        domains = domains_of(rows)
        loads = rows.pivot_table(index="domain", columns="expert", values="value", aggfunc="mean")
        matrix = loads.reindex(index=domains).to_numpy(dtype=float)
        claims = expert_claims(matrix)
        points.append(claims.assign(method=method, seed=seed))
    columns = ["method", "seed", "expert", TPR, FPR]
    return pd.concat(points, ignore_index=True)[columns] if points else pd.DataFrame(columns=columns)


def _cell(per_seed: pd.Series) -> tuple[float, float, int] | None:
    finite = per_seed[np.isfinite(per_seed)]
    return (float(finite.mean()), float(finite.std(ddof=0)), len(finite)) if len(finite) else None


def claims_table(frame: pd.DataFrame, select: str | None = None) -> Table | None:
    """Per method: TPR and FPR averaged over its experts with a dataset, and how many there are, mean ± std
    over seeds; None when no run routed through experts. Raises nothing."""
    points = claim_points(frame, select)
    if points.empty:
        return None
    rows = []
    for method, group in points.groupby("method", sort=True):
        per_seed = group.groupby("seed").agg({TPR: "mean", FPR: "mean", "expert": "count"})
        cells = {TPR: _cell(per_seed[TPR]), FPR: _cell(per_seed[FPR])}
        cells[EXPERTS_WITH_A_DATASET] = _cell(per_seed["expert"].astype(float))
        rows.append((method, {k: v for k, v in cells.items() if v is not None}))
    title = "experts' claims: TPR and FPR of routing over each expert's own datasets (mean ± std over seeds)"
    return Table(title, [TPR, FPR, EXPERTS_WITH_A_DATASET], rows, scale=1.0, decimals=2)  # rates as they are
