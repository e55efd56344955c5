"""The parameters table: how many parameters each compared setting trains, and how many a token uses.

Every run writes its model's counts as run-level rows
(:data:`~gemlab.results_schema.PARAMETER_METRICS`: ``params_total``,
``params_experts``, ``params_active``, ``expert_hidden``;
:mod:`gemlab.engine.parameters` says what each counts). This table has one
row per setting -- the method, every swept key that varies but the seed,
and the expert count where runs differ in it -- so that an expert-count
sweep at a fixed budget (``moe.param_budget``) shows each E's experts side
by side. Counts are shown whole, as they are; a cell is the value its seeds
share, or their mean ± std where they differ (REMoE's measured experts per
token can). Every setting is shown; none is selected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gemlab.report.results import last_evaluations
from gemlab.report.tables import Table, setting_columns, setting_label
from gemlab.results_schema import PARAMETER_METRICS, SWEPT_SEED, param_column

COLUMNS = {key.replace("_", " "): metric for key, metric in PARAMETER_METRICS.items()}  # label -> metric
EXPERT_COUNT_KEY = "moe.num_experts"


def _cell(values: pd.Series) -> tuple[float, float, int] | None:
    """The seeds' shared value (shown without ±), or their mean ± std; None without a finite value."""
    finite = values[np.isfinite(values)]
    if finite.empty:
        return None
    if finite.nunique() == 1:
        return float(finite.iloc[0]), 0.0, 1
    return float(finite.mean()), float(finite.std(ddof=0)), len(finite)


def parameters_table(frame: pd.DataFrame) -> Table | None:
    """Total, expert and active parameters and the experts' hidden width per setting; None when no run
    recorded counts (results written before runs did).

    ``frame`` is :func:`~gemlab.report.results.load_results`'s. Raises nothing.
    """
    rows = last_evaluations(frame)
    rows = rows[rows["metric"].isin(COLUMNS.values())]
    if rows.empty:
        return None
    keys = setting_columns(rows, (SWEPT_SEED.name, param_column(EXPERT_COUNT_KEY)))
    if rows["num_experts"].nunique(dropna=False) > 1:  # swept or not: the run's own (whole) expert count
        keys.append("num_experts")
    table_rows = []
    for values, group in rows.groupby(["method", *keys], sort=True, dropna=False):
        cells = {}
        for column, metric in COLUMNS.items():
            cell = _cell(group[group["metric"] == metric]["value"])
            if cell is not None:
                cells[column] = cell
        table_rows.append((setting_label(values[0], keys, values[1:]), cells))
    return Table("parameters (as counted by each run)", list(COLUMNS), table_rows, scale=1.0, decimals=0)
