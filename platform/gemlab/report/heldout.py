"""The leave-one-domain-out table: each setting's score on the domain it never trained on.

Runs with ``data.holdout`` write their held-out domain's task metric again as
``heldout_<metric>`` (``heldout_accuracy``) under that domain's name. This
table has one row per *setting* -- the method (router) and every swept key
that varies except ``data.holdout`` and ``seed`` (for the subset-invariance
sweep: ``invariance.mode`` and ``invariance.weight``) -- and one column per
held-out domain: the mean ± std over seeds of that score at each run's last
evaluation, and ``Avg.``, the mean over held-out domains (std over seeds of
each seed's mean).

Every setting is shown; none is selected. Choosing λ by the held-out score
would be test-domain selection, which DomainBed calls an oracle; choose it
from the training domains' rows of the per-domain table instead. Runs
outside a sweep carry no swept keys, so they are grouped by method alone:
compare alignment modes through a sweep (or report each mode's runs apart).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gemlab.report.results import last_evaluations, task_metric
from gemlab.report.tables import Table, setting_columns, setting_label
from gemlab.results_schema import SWEPT_SEED, heldout_metric, param_column

HOLDOUT_KEY = "data.holdout"
AVERAGE = "Avg."


def heldout_table(frame: pd.DataFrame) -> Table | None:
    """Held-out task metric per setting × held-out domain; None when no run held a domain out.

    ``frame`` is :func:`~gemlab.report.results.load_results`'s. Raises ReportError only for results
    without a single task metric, which ``load_results`` refuses.
    """
    metric = heldout_metric(task_metric(frame))
    rows = last_evaluations(frame)
    rows = rows[rows["metric"] == metric]
    if rows.empty:
        return None
    keys = setting_columns(rows, (SWEPT_SEED.name, param_column(HOLDOUT_KEY)))
    domains = list(dict.fromkeys(rows["domain"]))
    table_rows = []
    for values, group in rows.groupby(["method", *keys], sort=True, dropna=False):
        cells = {}
        for domain in domains:
            scores = group[group["domain"] == domain]["value"]
            if np.isfinite(scores).any():
                cells[domain] = (float(scores.mean()), float(scores.std(ddof=0)), len(scores))
        per_seed = group.groupby("seed")["value"].mean()
        if np.isfinite(per_seed).any():
            cells[AVERAGE] = (float(per_seed.mean()), float(per_seed.std(ddof=0)), len(per_seed))
        table_rows.append((setting_label(values[0], keys, values[1:]), cells))
    return Table(
        f"leave-one-domain-out: held-out {task_metric(frame)} (mean ± std over seeds)", [*domains, AVERAGE], table_rows
    )
