"""The immutable Plan: serialisation round trips, atomic saving, loading errors, derived views."""

import json
import os

import numpy as np
import pytest

from gemlab.plan.errors import PlanInputError
from gemlab.plan.plan import SCHEMA_VERSION, Plan
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.strategies import StrategyOptions
from gemlab.plan.synthetic import heavy_tailed_loads, load_capacity, random_affinity

TASKS = ("D1", "D2", "D3")
EXPERTS = ("E1", "E2", "E3")


def _argmax_problem():
    costs = np.array([[0.9, 0.5, 0.1], [0.8, 0.6, 0.2], [0.7, 0.1, 0.4]])
    return AssignmentProblem.count(costs, 2, TASKS, EXPERTS)


def _load_problem():
    loads = heavy_tailed_loads(24, 2)
    names = [f"dataset-{i:02d}" for i in range(24)]
    return AssignmentProblem.load(random_affinity(24, 4, 2), loads, load_capacity(loads, 4, 1.1), names)


def _plans():
    """Plans covering both modes, with and without a fractional LP plan and placed rounds."""
    count = AssignmentProblem.count(random_affinity(20, 4, 1), 6)
    return {
        "gem-count": make_plan(count, "gem", StrategyOptions(precision=5)),
        "gem-load": make_plan(_load_problem(), "gem"),
        "greedy-load": make_plan(_load_problem(), "greedy"),
        "random-count": make_plan(count, "random", StrategyOptions(seed=1)),
        "argmax": make_plan(_argmax_problem(), "argmax"),
        "no-bound": make_plan(count, "expert_centric", with_bound=False),
    }


@pytest.fixture(scope="module")
def plans():
    return _plans()


@pytest.fixture(scope="module")
def gem_load(plans):
    return plans["gem-load"]


NAMES = ["gem-count", "gem-load", "greedy-load", "random-count", "argmax", "no-bound"]


# --------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", NAMES)
def test_json_round_trip(plans, name):
    plan = plans[name]
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again.to_json() == text
    np.testing.assert_array_equal(again.assignment, plan.assignment)
    np.testing.assert_array_equal(again.costs, plan.costs)
    assert again.value == plan.value and again.lp_bound == plan.lp_bound
    assert again.mapping == plan.mapping
    assert again.timings == {}  # timings are never serialised


@pytest.mark.parametrize("name", NAMES)
def test_arrow_round_trip(plans, name):
    plan = plans[name]
    table = plan.to_arrow()
    assert table.num_rows == plan.num_tasks
    assert table.column("task").to_pylist() == list(plan.task_names)
    assert table.column("expert").to_pylist() == [plan.mapping[t] for t in plan.task_names]
    assert Plan.from_arrow(table).to_json() == plan.to_json()


def test_arrow_table_without_metadata_is_refused(gem_load):
    table = gem_load.to_arrow().replace_schema_metadata({})
    with pytest.raises(PlanInputError, match=r"plan table: no 'gemlab\.plan'"):
        Plan.from_arrow(table)


def test_json_is_canonical(gem_load):
    text = gem_load.to_json()
    assert text.endswith("\n") and "\n" not in text[:-1]
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["value"] == gem_load.value
    assert "timings" not in data and gem_load.timings


def test_fractional_plan_survives_serialisation(gem_load):
    assert gem_load.fractional is not None and ((gem_load.fractional > 0) & (gem_load.fractional < 1)).any()
    again = Plan.from_json(gem_load.to_json())
    np.testing.assert_array_equal(again.fractional, gem_load.fractional)
    np.testing.assert_array_equal(again.placed_round, gem_load.placed_round)


def test_problem_is_rebuilt(gem_load):
    problem = gem_load.problem
    assert problem.mode == "load"
    np.testing.assert_array_equal(problem.loads, gem_load.loads)
    assert problem.task_names == gem_load.task_names


# --------------------------------------------------------------- immutability
@pytest.mark.parametrize("field", ["assignment", "costs", "loads", "capacity", "fractional", "placed_round"])
def test_arrays_are_read_only(gem_load, field):
    array = getattr(gem_load, field)
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 0


def test_plan_copies_the_arrays_it_is_given():
    assignment = np.array([0, 1, 0])
    costs = np.eye(3)[:, :2].copy()
    plan = Plan(TASKS, ("a", "b"), assignment, costs, np.ones(3), np.array([2.0, 2.0]), "count", "manual")
    assignment[0] = 1
    costs[0, 0] = 9.0
    assert plan.assignment.tolist() == [0, 1, 0] and plan.costs[0, 0] == 1.0


def test_plan_is_frozen(gem_load):
    with pytest.raises(AttributeError):
        gem_load.strategy = "other"


@pytest.mark.parametrize(
    ("assignment", "message"), [([0, 1], "do not match"), ([0, 1, 2], "in range"), ([0, -1, 1], "in range")]
)
def test_plan_rejects_bad_assignments(assignment, message):
    with pytest.raises(PlanInputError, match=message):
        Plan(TASKS, ("a", "b"), assignment, np.ones((3, 2)), np.ones(3), np.ones(2) * 2, "count", "manual")


# ----------------------------------------------------------------- explain
@pytest.mark.parametrize("name", ["gem-count", "gem-load"])
def test_explain_lists_experts_and_bound(plans, name):
    plan = plans[name]
    text = plan.explain()
    for expert in plan.expert_names:
        assert expert in text
    assert f"LP bound {plan.lp_bound:.6g}" in text
    assert f"value {plan.value:.6g}" in text
    assert "capacity violations: none" in text
    assert f"strategy {plan.strategy}" in text


def test_explain_flags_overloaded_experts(plans):
    text = plans["argmax"].explain()
    assert "capacity violations: E1 +1" in text
    e1_line = next(line for line in text.splitlines() if line.startswith("E1 "))
    assert e1_line.endswith("OVER") and "D1, D2, D3" in e1_line
    for task in TASKS:
        assert task in text


def test_explain_large_plan_truncates_names():
    problem = AssignmentProblem.count(random_affinity(60, 2, 0), 40)
    text = make_plan(problem, "gem").explain()
    assert "more)" in text  # at most six names per expert line
    assert "affinity" not in text and "task59" not in text  # no per-task table above 40 tasks


def test_explain_small_plan_has_a_task_table(plans):
    text = plans["gem-count"].explain()
    assert "affinity" in text and "task19" in text


# ------------------------------------------------------------- save and load
def test_save_and_load(tmp_path, gem_load):
    path = gem_load.save(tmp_path / "nested" / "plan.json")
    assert path == tmp_path / "nested" / "plan.json"
    assert path.read_text() == gem_load.to_json()
    assert Plan.load(path).to_json() == gem_load.to_json()
    assert os.listdir(path.parent) == ["plan.json"]


def test_save_into_a_file_as_folder_fails_cleanly(tmp_path, gem_load):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        gem_load.save(blocker / "plan.json")
    assert sorted(os.listdir(tmp_path)) == ["blocker"]
    assert blocker.read_text() == "not a folder"


def test_failed_save_keeps_the_existing_file(tmp_path, gem_load, monkeypatch):
    path = tmp_path / "plan.json"
    path.write_text("previous plan")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        gem_load.save(path)
    monkeypatch.undo()
    assert path.read_text() == "previous plan"
    assert os.listdir(tmp_path) == ["plan.json"]  # no .tmp left behind (hidden ones included)


def test_save_overwrites_atomically(tmp_path, plans):
    path = tmp_path / "plan.json"
    plans["argmax"].save(path)
    plans["gem-load"].save(path)
    assert Plan.load(path).to_json() == plans["gem-load"].to_json()
    assert os.listdir(tmp_path) == ["plan.json"]


def _write(tmp_path, data):
    path = tmp_path / "bad-plan.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_load_wrong_schema_version(tmp_path, gem_load, version):
    data = gem_load.to_dict()
    data["schema_version"] = version
    path = _write(tmp_path, data)
    with pytest.raises(PlanInputError, match="schema_version") as info:
        Plan.load(path)
    assert str(path) in str(info.value)


def test_load_without_schema_version(tmp_path, gem_load):
    data = gem_load.to_dict()
    del data["schema_version"]
    path = _write(tmp_path, data)
    with pytest.raises(PlanInputError, match="schema_version None") as info:
        Plan.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("field", ["assignment", "costs", "task_names", "capacity_mode", "strategy", "loads"])
def test_load_missing_field(tmp_path, gem_load, field):
    data = gem_load.to_dict()
    del data[field]
    path = _write(tmp_path, data)
    with pytest.raises(PlanInputError, match="missing field") as info:
        Plan.load(path)
    assert str(path) in str(info.value) and repr(field) in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "", '{"schema_version": 1,'])
def test_load_invalid_json(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(PlanInputError, match="not valid JSON") as info:
        Plan.load(path)
    assert str(path) in str(info.value)


def test_load_json_that_is_not_an_object(tmp_path):
    path = _write(tmp_path, [1, 2, 3])
    with pytest.raises(PlanInputError, match="expected a JSON object") as info:
        Plan.load(path)
    assert str(path) in str(info.value)


def test_load_inconsistent_plan_names_the_file(tmp_path, gem_load):
    data = gem_load.to_dict()
    data["assignment"] = data["assignment"][:-1]
    path = _write(tmp_path, data)
    with pytest.raises(PlanInputError, match="do not match") as info:
        Plan.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(PlanInputError, match="cannot read plan") as info:
        Plan.load(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------- derived views
def test_argmax_violations(plans):
    plan = plans["argmax"]
    assert plan.violations == {"E1": 1.0}
    assert plan.expert_load.tolist() == [3.0, 0.0, 0.0]


def test_load_mode_violations_report_the_excess():
    plan = Plan(TASKS, ("a", "b"), [0, 0, 1], np.ones((3, 2)), [2.5, 1.0, 4.0], [3.0, 5.0], "load", "manual")
    assert plan.violations == {"a": pytest.approx(0.5)}
    assert plan.expert_load.tolist() == [3.5, 4.0]


def test_mapping_and_tasks_of(plans):
    plan = plans["argmax"]
    assert plan.mapping == {"D1": "E1", "D2": "E1", "D3": "E1"}
    assert plan.tasks_of("E1") == TASKS
    assert plan.tasks_of(0) == TASKS
    assert plan.tasks_of("E2") == () and plan.tasks_of(2) == ()


def test_mapping_matches_tasks_of(gem_load):
    for j, expert in enumerate(gem_load.expert_names):
        tasks = gem_load.tasks_of(expert)
        assert tasks == gem_load.tasks_of(j)
        assert all(gem_load.mapping[t] == expert for t in tasks)
    assert sum(len(gem_load.tasks_of(e)) for e in gem_load.expert_names) == gem_load.num_tasks


def test_tasks_of_unknown_expert_raises_key_error(plans):
    with pytest.raises(KeyError):
        plans["argmax"].tasks_of("E9")


def test_tasks_of_accepts_numpy_integers(plans):
    plan = plans["argmax"]
    assert plan.tasks_of(np.int64(0)) == plan.tasks_of(0)


def test_ratio(plans):
    gem = plans["gem-count"]
    assert gem.ratio == pytest.approx(1.0, rel=1e-9)
    assert plans["no-bound"].lp_bound is None and plans["no-bound"].ratio is None
