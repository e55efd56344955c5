"""A sweep's results: every trial's history, from its last checkpoint, as one long-form table.

Each trial's TensorBoard events are written here too, from the same history.

Each trial's rows are its run's rows (:mod:`gemlab.results_schema`) plus the
columns ``sweep``, ``trial`` and ``param:<key>`` for each swept key, so
reports can group by method and plot a metric against a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gemlab.engine.api import compose_config, read_saved_run, write_table
from gemlab.results_schema import RESULTS_FILE, SWEEP_COLUMN, TRIAL_COLUMN, arrow_schema, param_column
from gemlab.storage import Location
from gemlab.tune.sweep import trial_name, trial_overrides


def _column_value(value: Any) -> Any:
    """Numbers as floats (a column mixing 0 and 0.01 stays one type), everything else as text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return float(value)


def collect_results(
    sweep_dir: Location,
    trials: list[dict[str, Any]],
    base: list[str],
    config_dir: str | None,
    metric: str,
    links: Mapping[int, list[str]] | None = None,
) -> tuple[Location, list[dict[str, Any]]]:
    """Write ``sweep_dir/results.parquet``; return it and one leaderboard row per trial that reported.

    Every trial's config is composed from ``config_dir`` (None: the repository's experiments/), the
    folder the sweep was composed from, with its ``links`` to a parent trial (:mod:`gemlab.tune.stages`).
    Raises ConfigError for a trial whose config no longer composes, OSError when the sweep's storage
    cannot be read or written.
    """
    import pyarrow as pa

    tables, rows = [], []
    for index, params in enumerate(trials):
        name = trial_name(index)
        extra = {SWEEP_COLUMN: sweep_dir.name, TRIAL_COLUMN: name}
        extra |= {param_column(key): _column_value(value) for key, value in params.items()}
        cfg = compose_config(trial_overrides(base, params, (links or {}).get(index, ())), config_dir)
        saved = read_saved_run(cfg, sweep_dir / "trials" / name, name, extra)
        if saved is None:
            continue
        tables.append(saved.table)
        value = saved.metrics.get(metric, float("nan"))
        rows.append({"trial": name, "params": params, "step": saved.step, "value": value})
    table = pa.concat_tables(tables, promote_options="default") if tables else arrow_schema().empty_table()
    return write_table(table, sweep_dir / RESULTS_FILE), rows
