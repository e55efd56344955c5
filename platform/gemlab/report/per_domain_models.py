"""One model per domain, read as one result: GEM's Single-DINO row (Table II).

Single-DINO trains a separate detector on each dataset. As a sweep, that is
one trial per domain (``data.domains: [[photo], [aerial], …]``), so each
run's table holds one domain and an ``all`` value that is that domain's
score. Read as separate candidates, the report would select one domain's
model and call it the method. Instead, a seed's runs of one method and
setting that each trained one domain are read together, at each run's last
evaluation, as one run covering every domain:

* each domain's rows are its own model's;
* a metric's ``all`` value is the mean of its domain rows, as one run's is
  (the run-level metrics without domain rows are averaged over the models);
* the total parameter count is the sum over the models (every one is
  stored and trained), while the active count stays one model's (a domain's
  input runs through its own model only), as the paper counts Single-DINO.
"""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd

from gemlab.results_schema import ALL_DOMAINS, PARAM_PREFIX, PARAMS_EXPERTS, PARAMS_TOTAL, SWEPT_DOMAINS

SUMMED = (PARAMS_TOTAL, PARAMS_EXPERTS)  # every model is stored and trained


def _one_domain(value: object) -> bool:
    """Whether a swept ``data.domains`` value (written as text, ``['photo']``) names exactly one domain."""
    if not isinstance(value, str):
        return False
    try:
        names = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return False
    return isinstance(names, list) and len(names) == 1


def _combined(parts: pd.DataFrame) -> pd.DataFrame:
    """One seed's single-domain runs of a method as one run's rows, at each part's last evaluation."""
    last = parts[parts["step"] == parts.groupby("run")["step"].transform("max")]
    domain_rows = last[last["domain"] != ALL_DOMAINS]
    run_level = last[last["domain"] == ALL_DOMAINS]
    template = last.iloc[0]
    rows = []
    for metric, group in run_level.groupby("metric", sort=False):
        per_domain = domain_rows[domain_rows["metric"] == metric]["value"]
        if len(per_domain):
            value = float(per_domain.mean())
        elif metric in SUMMED:
            value = float(group["value"].sum())
        else:
            value = float(group["value"].mean()) if np.isfinite(group["value"]).any() else float("nan")
        rows.append({**template.to_dict(), "domain": ALL_DOMAINS, "metric": metric, "value": value})
    combined = pd.concat([domain_rows, pd.DataFrame(rows, columns=last.columns)], ignore_index=True)
    combined["run"] = "+".join(sorted(parts["run"].unique()))
    combined["step"] = int(last["step"].max())
    combined[SWEPT_DOMAINS] = None
    return combined


def combine_per_domain_models(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with its ``method`` column) with every seed's one-domain runs of a method and setting read
    as one run (see the module docstring); unchanged without such runs. Raises nothing."""
    if SWEPT_DOMAINS not in frame.columns:
        return frame
    single = frame[SWEPT_DOMAINS].map(_one_domain)
    if not single.any():
        return frame
    parts = frame[single]
    setting = [c for c in parts.columns if c.startswith(PARAM_PREFIX) and c != SWEPT_DOMAINS]
    keys = ["method", "router", "strategy", "precision", "num_experts", "seed", *setting]
    combined = [_combined(group) for _, group in parts.groupby(keys, sort=False, dropna=False)]
    return pd.concat([frame[~single], *combined], ignore_index=True)
