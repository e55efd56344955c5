"""The plans table (GEM Table VI's columns): each setting's score beside the quality of the plan it trained by.

Every run that follows a plan writes the plan's value Σ c_ij, its value / LP
bound, the load above capacity (a share of the total capacity) and the
number of overloaded experts as run-level rows
(:data:`~gemlab.results_schema.PLAN_METRICS`). This table has one row per
setting -- the method and every swept key that varies but the seed (a
planner strategy, a rounding precision p) -- and the task metric's mean
over domains beside those four, each mean ± std over seeds at the run's
last evaluation, unscaled. Every setting is shown; none is selected: a
precision or strategy study reads across all of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gemlab.report.results import last_evaluations, task_metric
from gemlab.report.tables import Table, setting_columns, setting_label
from gemlab.results_schema import ALL_DOMAINS, PLAN_METRICS, SWEPT_SEED

AVERAGE = "Avg."


def plans_table(frame: pd.DataFrame) -> Table | None:
    """The task metric and the plan's quality per setting; None when no run recorded a plan.

    ``frame`` is :func:`~gemlab.report.results.load_results`'s. Raises ReportError only for results
    without a single task metric, which ``load_results`` refuses.
    """
    metric = task_metric(frame)
    rows = last_evaluations(frame)
    rows = rows[(rows["domain"] == ALL_DOMAINS) & rows["metric"].isin([metric, *PLAN_METRICS.values()])]
    planned = rows[rows["metric"].isin(PLAN_METRICS.values())]["run"].unique()
    rows = rows[rows["run"].isin(planned)]
    if rows.empty:
        return None
    keys = setting_columns(rows, (SWEPT_SEED.name,))
    columns = {AVERAGE: metric, **PLAN_METRICS}
    table_rows = []
    for values, group in rows.groupby(["method", *keys], sort=True, dropna=False):
        cells = {}
        for column, name in columns.items():
            scores = group[group["metric"] == name]["value"]
            if np.isfinite(scores).any():
                cells[column] = (float(scores.mean()), float(scores.std(ddof=0)), len(scores))
        table_rows.append((setting_label(values[0], keys, values[1:]), cells))
    title = f"plans: mean {metric} over domains and the plan's quality (mean ± std over seeds)"
    return Table(title, list(columns), table_rows, scale=1.0, decimals=3)
