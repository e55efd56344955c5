"""AssignmentProblem validation: every malformed input is refused with a message naming the culprit."""

import numpy as np
import pytest

from gemlab.plan.errors import InfeasiblePlanError, PlanError, PlanInputError
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.strategies import StrategyOptions

TASKS = ("alpha", "beta", "gamma")
EXPERTS = ("east", "west")
COSTS = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])


def _count(costs=COSTS, capacity=2, tasks=TASKS, experts=EXPERTS):
    return AssignmentProblem.count(costs, capacity, tasks, experts)


def _load(costs=COSTS, loads=(1.0, 2.0, 3.0), capacity=4.0, tasks=TASKS, experts=EXPERTS):
    return AssignmentProblem.load(costs, loads, capacity, tasks, experts)


BUILDERS = pytest.mark.parametrize("build", [_count, _load], ids=["count", "load"])


def test_errors_are_value_errors():
    assert issubclass(PlanInputError, PlanError) and issubclass(InfeasiblePlanError, PlanError)
    assert issubclass(PlanError, ValueError)


# --------------------------------------------------------------- valid inputs
def test_count_problem_is_built_and_read_only():
    problem = _count()
    assert problem.mode == "count"
    assert (problem.num_tasks, problem.num_experts) == (3, 2)
    assert problem.task_names == TASKS and problem.expert_names == EXPERTS
    np.testing.assert_array_equal(problem.loads, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(problem.capacity, [2.0, 2.0])
    for array in (problem.costs, problem.loads, problem.capacity):
        assert not array.flags.writeable


def test_problem_copies_its_inputs():
    costs = COSTS.copy()
    problem = _count(costs=costs)
    costs[0, 0] = -5.0
    assert problem.costs[0, 0] == 0.9


def test_default_names():
    problem = AssignmentProblem.count(COSTS, 2)
    assert problem.task_names == ("task0", "task1", "task2")
    assert problem.expert_names == ("expert0", "expert1")


def test_load_problem_accepts_exact_fit_and_zero_loads():
    problem = _load(loads=(0.0, 4.0, 4.0), capacity=[4.0, 4.0])
    assert problem.mode == "load"
    np.testing.assert_array_equal(problem.loads, [0.0, 4.0, 4.0])


# ---------------------------------------------------------------------- costs
@BUILDERS
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_cost_names_task_and_expert(build, bad):
    costs = COSTS.copy()
    costs[2, 1] = bad
    with pytest.raises(PlanInputError, match="costs") as info:
        build(costs=costs)
    message = str(info.value)
    assert "'gamma'" in message and "'west'" in message
    assert "'alpha'" not in message and "'east'" not in message


@BUILDERS
@pytest.mark.parametrize("costs", [np.ones(3), np.ones((3, 2, 1)), np.float64(1.0)], ids=["1d", "3d", "0d"])
def test_costs_must_be_two_dimensional(build, costs):
    with pytest.raises(PlanInputError, match="costs") as info:
        build(costs=costs)
    assert str(np.shape(costs)) in str(info.value)


@BUILDERS
@pytest.mark.parametrize("shape", [(0, 2), (3, 0)])
def test_costs_must_be_non_empty(build, shape):
    with pytest.raises(PlanInputError, match="costs"):
        build(costs=np.zeros(shape))


# ---------------------------------------------------------------------- names
@BUILDERS
def test_task_names_count_mismatch(build):
    with pytest.raises(PlanInputError, match=r"task_names: 2 names for 3") as info:
        build(tasks=("alpha", "beta"))
    assert "rows" in str(info.value)


@BUILDERS
def test_expert_names_count_mismatch(build):
    with pytest.raises(PlanInputError, match=r"expert_names: 3 names for 2"):
        build(experts=("east", "west", "north"))


@BUILDERS
def test_duplicate_task_name(build):
    with pytest.raises(PlanInputError, match=r"task_names: duplicate name 'beta'"):
        build(tasks=("alpha", "beta", "beta"))


@BUILDERS
def test_duplicate_expert_name(build):
    with pytest.raises(PlanInputError, match=r"expert_names: duplicate name 'east'"):
        build(experts=("east", "east"))


@BUILDERS
def test_empty_task_name(build):
    with pytest.raises(PlanInputError, match=r"task_names: names must be non-empty strings, got ''"):
        build(tasks=("alpha", "", "gamma"))


@BUILDERS
def test_empty_expert_name(build):
    with pytest.raises(PlanInputError, match=r"expert_names: .*non-empty"):
        build(experts=("east", ""))


@BUILDERS
def test_non_string_name(build):
    with pytest.raises(PlanInputError, match=r"task_names: .*got 7"):
        build(tasks=("alpha", 7, "gamma"))


# ---------------------------------------------------------------------- loads
@pytest.mark.parametrize("bad", [-1.0, -1e-12])
def test_negative_load_names_task(bad):
    with pytest.raises(PlanInputError, match=r"loads: .*'beta'") as info:
        _load(loads=(1.0, bad, 1.0))
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_load_names_task(bad):
    with pytest.raises(PlanInputError, match=r"loads: must be finite and >= 0; task 'gamma'"):
        _load(loads=(1.0, 1.0, bad))


@pytest.mark.parametrize("loads", [(1.0, 2.0), (1.0, 2.0, 3.0, 4.0), [[1.0, 2.0, 3.0]], 1.0])
def test_loads_wrong_length(loads):
    with pytest.raises(PlanInputError, match=r"loads: expected 3 values \(one per task\)"):
        _load(loads=loads)


# ----------------------------------------------------------------- capacities
@pytest.mark.parametrize("bad", [0, -1])
def test_count_capacity_not_positive_names_expert(bad):
    with pytest.raises(PlanInputError, match=r"capacity: must be finite and > 0; expert 'west'"):
        _count(capacity=[3, bad])


@pytest.mark.parametrize("bad", [0.0, -2.5, np.nan, np.inf])
def test_load_capacity_not_positive_or_finite_names_expert(bad):
    with pytest.raises(PlanInputError, match=r"load capacity: must be finite and > 0; expert 'west'"):
        _load(capacity=[10.0, bad])


@pytest.mark.parametrize("bad", [0, -3])
@BUILDERS
def test_scalar_capacity_not_positive_names_first_expert(build, bad):
    with pytest.raises(PlanInputError, match=r"expert 'east'"):
        build(capacity=bad)


@BUILDERS
@pytest.mark.parametrize("capacity", [[3], [3, 3, 3], [[3, 3]]])
def test_capacity_vector_wrong_length(build, capacity):
    with pytest.raises(PlanInputError, match=r"capacity: expected a scalar or 2 values"):
        build(capacity=capacity)


@pytest.mark.parametrize("capacity", [2.5, [2, 1.5]])
def test_count_capacity_must_be_integer(capacity):
    with pytest.raises(PlanInputError, match=r"capacity: count capacities must be integers"):
        _count(capacity=capacity)


def test_count_capacity_integral_floats_are_accepted():
    np.testing.assert_array_equal(_count(capacity=[2.0, 1.0]).capacity, [2.0, 1.0])


def test_count_total_capacity_below_tasks_is_infeasible():
    with pytest.raises(InfeasiblePlanError, match=r"total capacity 2 is smaller than the 3 tasks") as info:
        _count(capacity=[1, 1])
    assert info.value.tasks == TASKS


def test_count_total_capacity_equal_to_tasks_is_fine():
    assert _count(capacity=[2, 1]).capacity.sum() == 3


def test_load_heavier_than_every_expert_is_named():
    with pytest.raises(InfeasiblePlanError) as info:
        _load(loads=(1.0, 9.5, 2.0), capacity=[4.0, 6.0])
    assert info.value.tasks == ("beta",)
    message = str(info.value)
    assert "'beta' (load 9.5)" in message and "6" in message
    assert "'alpha'" not in message and "'gamma'" not in message


def test_every_too_heavy_load_is_named():
    with pytest.raises(InfeasiblePlanError) as info:
        _load(loads=(7.0, 1.0, 8.0), capacity=[4.0, 6.0])
    assert info.value.tasks == ("alpha", "gamma")
    assert "'alpha' (load 7)" in str(info.value) and "'gamma' (load 8)" in str(info.value)


def test_total_load_above_total_capacity_is_infeasible():
    with pytest.raises(InfeasiblePlanError, match=r"total load 12 exceeds total capacity 10") as info:
        _load(loads=(4.0, 4.0, 4.0), capacity=[5.0, 5.0])
    assert info.value.tasks == TASKS


def test_load_exactly_at_capacity_within_float_tolerance():
    # 0.1 + 0.2 > 0.3 in floating point; a plan that fits exactly must not be refused.
    problem = AssignmentProblem.load(np.ones((2, 1)), [0.1, 0.2], 0.3)
    assert problem.capacity.tolist() == [0.3]


# ---------------------------------------------------------- options and names
@pytest.mark.parametrize("precision", [0, 31, -1, 2.5, True, False, "8", None])
def test_precision_out_of_range_is_refused(precision):
    with pytest.raises(PlanInputError, match="precision"):
        make_plan(_count(), "gem", StrategyOptions(precision=precision))


@pytest.mark.parametrize("strategy", ["greedy", "argmax"])
def test_precision_is_validated_for_every_strategy(strategy):
    with pytest.raises(PlanInputError, match="precision"):
        make_plan(_count(), strategy, StrategyOptions(precision=31))


@pytest.mark.parametrize("precision", [1, 30, np.int64(8)])
def test_precision_in_range_is_accepted(precision):
    plan = make_plan(_count(), "gem", StrategyOptions(precision=precision))
    assert plan.precision == int(precision)


@pytest.mark.parametrize("time_limit", [0, -1.0, float("nan")])
def test_time_limit_must_be_positive(time_limit):
    with pytest.raises(PlanInputError, match="time_limit"):
        make_plan(_count(), "gem", StrategyOptions(time_limit=time_limit))


@pytest.mark.parametrize("strategy", ["GEM", "simplex", ""])
def test_unknown_strategy(strategy):
    with pytest.raises(PlanInputError, match=r"strategy: unknown") as info:
        make_plan(_count(), strategy)
    assert repr(strategy) in str(info.value) and "gem" in str(info.value)
