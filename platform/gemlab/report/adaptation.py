"""The adaptation table (GEM Fig. 11's two axes): what adapted runs learnt and what they forgot.

Runs that continue a trained parent on added domains (``adapt.parent``) write
each added domain's task metric as ``adaptability`` and each old domain's drop
from the parent's last score as ``forgetting`` (:mod:`gemlab.engine.forgetting`).
This table has one row per setting -- the method and every swept key that
varies but the seed -- and columns ``adaptability`` and ``forgetting`` (their
means over domains), then one per domain: an added domain's adaptability, an
old domain's forgetting. Cells are mean ± std over seeds at each run's last
evaluation. Every setting is shown; none is selected: the trade-off between
the two axes is the result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gemlab.report.results import last_evaluations, task_metric
from gemlab.report.tables import Table, setting_columns, setting_label
from gemlab.results_schema import ADAPTABILITY, ALL_DOMAINS, FORGETTING, SWEPT_SEED


def _cell(values: pd.Series) -> tuple[float, float, int] | None:
    if not np.isfinite(values).any():
        return None
    return float(values.mean()), float(values.std(ddof=0)), len(values)


def adaptation_table(frame: pd.DataFrame) -> Table | None:
    """Adaptability and forgetting per setting, overall and per domain; None when no run adapted a parent.

    ``frame`` is :func:`~gemlab.report.results.load_results`'s. Raises ReportError only for results
    without a single task metric, which ``load_results`` refuses.
    """
    rows = last_evaluations(frame)
    rows = rows[rows["metric"].isin((ADAPTABILITY, FORGETTING))]
    if rows.empty:
        return None
    keys = setting_columns(rows, (SWEPT_SEED.name,))
    columns = {ADAPTABILITY: (ALL_DOMAINS, ADAPTABILITY), FORGETTING: (ALL_DOMAINS, FORGETTING)}
    for family, suffix in ((ADAPTABILITY, "new"), (FORGETTING, "forgot")):
        names = dict.fromkeys(rows[(rows["metric"] == family) & (rows["domain"] != ALL_DOMAINS)]["domain"])
        columns |= {f"{name} ({suffix})": (name, family) for name in names}
    table_rows = []
    for values, group in rows.groupby(["method", *keys], sort=True, dropna=False):
        cells = {}
        for column, (domain, metric) in columns.items():
            cell = _cell(group[(group["domain"] == domain) & (group["metric"] == metric)]["value"])
            if cell is not None:
                cells[column] = cell
        table_rows.append((setting_label(values[0], keys, values[1:]), cells))
    title = f"adaptation: {task_metric(frame)} of added domains, and old domains' drop (mean ± std over seeds)"
    return Table(title, list(columns), table_rows)
