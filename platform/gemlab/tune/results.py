"""A sweep's results: every trial's history, from its last checkpoint, as one long-form table.

Each trial's TensorBoard events are written here too, from the same history.

Each trial's rows are its run's rows (``gemlab.engine.outputs``) plus the
columns ``sweep``, ``trial`` and ``param:<key>`` for each swept key, so
reports can group by method and plot a metric against a parameter.
"""

from __future__ import annotations

from typing import Any

from gemlab.engine.checkpoint import read_history
from gemlab.engine.config import compose_config
from gemlab.engine.cross_expert import with_cross_expert
from gemlab.engine.loop import flat_metrics
from gemlab.engine.outputs import RESULTS_FILE, TENSORBOARD_DIR, TensorBoardLog, results_table, write_table
from gemlab.engine.prepare import with_absolute_paths
from gemlab.engine.resume import find_resume_point
from gemlab.storage import Location
from gemlab.tune.sweep import trial_name, trial_overrides


def _column_value(value: Any) -> Any:
    """Numbers as floats (a column mixing 0 and 0.01 stays one type), everything else as text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return float(value)


def _tensorboard(run_dir: Location, history: list[dict[str, Any]]) -> None:
    """The trial's TensorBoard events, written once from its history (trials print no live progress)."""
    folder = run_dir / TENSORBOARD_DIR
    if folder.exists():
        return
    log = TensorBoardLog(run_dir)
    for record in history:
        log.add(record)
    log.close()


def collect_results(
    sweep_dir: Location, trials: list[dict[str, Any]], base: list[str], config_dir: str | None, metric: str
) -> tuple[Location, list[dict[str, Any]]]:
    """Write ``sweep_dir/results.parquet``; return it and one leaderboard row per trial that reported."""
    import pyarrow as pa

    tables, rows = [], []
    for index, params in enumerate(trials):
        name = trial_name(index)
        run_dir = sweep_dir / "trials" / name
        resume = find_resume_point(run_dir)
        if resume.folder is None:
            continue
        cfg = with_absolute_paths(compose_config(trial_overrides(base, params), config_dir))
        history = with_cross_expert(cfg, run_dir, read_history(resume.folder))
        _tensorboard(run_dir, history)
        extra = {"sweep": sweep_dir.name, "trial": name, **{f"param:{k}": _column_value(v) for k, v in params.items()}}
        tables.append(results_table(cfg, name, history, extra))
        last = flat_metrics(history[-1])
        rows.append(
            {"trial": name, "params": params, "step": history[-1]["step"], "value": last.get(metric, float("nan"))}
        )
    table = (
        pa.concat_tables(tables, promote_options="default") if tables else results_table(compose_config(base), "", [])
    )
    return write_table(table, sweep_dir / RESULTS_FILE), rows
