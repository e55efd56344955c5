"""The every-setting table: each setting's task metric per domain, none selected (GEM Table V's shape).

The per-domain table selects one candidate per method. A study whose swept
key *is* the comparison -- Table V's shots of the target dataset, k ∈ {5,
10, 50, all} -- needs every value side by side instead. This table has one
row per setting: the method and every swept key that varies but the seed
(and the keys the method label names already), with each domain's task
metric and ``Avg.``, mean ± std over seeds at each run's last evaluation.
It is written only when such a key varies.
"""

from __future__ import annotations

import pandas as pd

from gemlab.report.results import last_evaluations, task_metric
from gemlab.report.tables import Table, cells_of, metric_columns, setting_columns, setting_label
from gemlab.results_schema import SWEPT_SEED


def settings_table(frame: pd.DataFrame, metric: str | None = None) -> Table | None:
    """``metric`` (None: the task metric) per domain and on average for every setting; None when no swept key
    but the seed varies. Raises ReportError as :func:`~gemlab.report.tables.per_domain_table` does."""
    rows = last_evaluations(frame)
    keys = setting_columns(rows, (SWEPT_SEED.name,))
    if not keys:
        return None
    metric = metric or task_metric(frame)
    columns = metric_columns(rows, metric)
    table_rows = [
        (setting_label(values[0], keys, values[1:]), cells_of(group, columns))
        for values, group in rows.groupby(["method", *keys], sort=True, dropna=False)
    ]
    return Table(f"every setting: {metric} (mean ± std over seeds)", list(columns), table_rows)
