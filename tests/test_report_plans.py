"""The plan's quality as run-level rows (value, value / LP, capacity violations) and the report's plans table."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gemlab.engine.config import compose_config
from gemlab.engine.outputs import plan_metrics, results_table, run_constants
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.report.figures import parameter_curves
from gemlab.report.plans import plans_table
from gemlab.report.results import load_results
from gemlab.results_schema import (
    ALL_DOMAINS,
    CAPACITY_OVERLOAD,
    OVERLOADED_EXPERTS,
    PARAM_PREFIX,
    PLAN_LP_RATIO,
    PLAN_VALUE,
)
from helpers import evaluation_record

# two tasks prefer expert 0, which holds one: argmax overloads it, GEM does not
PROBLEM = AssignmentProblem.count(np.array([[0.9, 0.1], [0.8, 0.3]]), 1, ("rot0", "invert"), ("e0", "e1"))


def test_a_plans_value_ratio_and_violations_are_rows_of_its_run():
    gem, argmax = make_plan(PROBLEM, "gem"), make_plan(PROBLEM, "argmax")
    rows = {metric: value for _, metric, value in plan_metrics(gem)}
    assert rows == pytest.approx({PLAN_VALUE: 1.2, PLAN_LP_RATIO: 1.0, CAPACITY_OVERLOAD: 0.0, OVERLOADED_EXPERTS: 0})
    rows = {metric: value for domain, metric, value in plan_metrics(argmax)}
    assert rows[PLAN_VALUE] == pytest.approx(1.7) and rows[PLAN_LP_RATIO] == pytest.approx(1.7 / 1.2)
    assert rows[CAPACITY_OVERLOAD] == pytest.approx(1 / 2) and rows[OVERLOADED_EXPERTS] == 1  # one task too many
    assert plan_metrics(None) == [] and run_constants(None, None) == []
    assert all(domain == ALL_DOMAINS for domain, _, _ in plan_metrics(argmax))


def test_the_plans_table_shows_every_strategy_beside_its_score(tmp_path):
    tables = []
    for strategy, accuracy in (("gem", 0.8), ("argmax", 0.6)):
        cfg = compose_config(["experiment=tiny", f"plan.strategy={strategy}"])
        for seed in (0, 1):
            history = [evaluation_record(6, accuracy + seed / 100)]
            constants = plan_metrics(make_plan(PROBLEM, strategy))
            extra = {f"{PARAM_PREFIX}plan.strategy": strategy, f"{PARAM_PREFIX}seed": seed}
            tables.append(results_table(cfg, f"{strategy}-{seed}", history, extra, constants))
    path = tmp_path / "results.parquet"
    pq.write_table(pa.concat_tables(tables), path)
    frame = load_results([str(path)], None)
    table = plans_table(frame)
    assert table.columns == ["Avg.", "plan value", "value / LP", "capacity overload", "overloaded experts"]
    cells = dict(table.rows)
    assert list(cells) == ["gem", "gem:argmax"]  # the method names the strategy: no plan.strategy= again
    gem = cells["gem"]
    assert gem["Avg."][:2] == pytest.approx(
        (0.60375, 0.00375)
    )  # 0.75 a: invert scores a / 2 and gem["overloaded experts"][0] == 0
    argmax = cells["gem:argmax"]
    assert argmax["capacity overload"][0] == pytest.approx(0.5) and argmax["plan value"][0] == pytest.approx(1.7)
    assert "curve-seed.png" not in {figure.file_name for figure in parameter_curves(frame)}  # seeds: the error bars
