"""Mapping strategies: optimality against brute force and the MIP, capacity properties, determinism."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gemlab.plan.errors import InfeasiblePlanError
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.strategies import STRATEGIES, StrategyOptions
from gemlab.plan.synthetic import heavy_tailed_loads, load_capacity, random_affinity

CAPACITY_RESPECTING = ("gem", "expert_centric", "random", "greedy")
DETERMINISTIC = tuple(name for name in STRATEGIES if name != "exact")


def _brute_force(problem):
    """(best value, best assignment) over every integral assignment within capacity; (-inf, None) if none."""
    best, best_assignment = -np.inf, None
    for choice in itertools.product(range(problem.num_experts), repeat=problem.num_tasks):
        assignment = np.array(choice)
        if not problem.overload(assignment).any():
            value = problem.value(assignment)
            if value > best:
                best, best_assignment = value, assignment
    return best, best_assignment


def _tiny_instance(seed, mode):
    """A random instance with N <= 7, E <= 4 that has an integral plan."""
    rng = np.random.default_rng(1000 + seed)
    n, e = int(rng.integers(2, 8)), int(rng.integers(2, 5))
    costs = rng.uniform(-0.2, 1.0, (n, e))
    if mode == "count":
        capacity = rng.integers(1, 3, e)
        capacity[0] += max(0, n - capacity.sum())
        return AssignmentProblem.count(costs, capacity)
    loads = rng.integers(1, 10, n).astype(float)
    capacity = rng.uniform(loads.max(), 2 * loads.max(), e)
    capacity *= max(1.0, 1.15 * loads.sum() / capacity.sum())
    problem = AssignmentProblem.load(costs, loads, capacity)
    if not np.isfinite(_brute_force(problem)[0]):  # tight: no integral plan, add room
        problem = AssignmentProblem.load(costs, loads, capacity + loads.max())
    return problem


def _assert_valid(plan, problem):
    assert plan.assignment.shape == (problem.num_tasks,)
    assert ((plan.assignment >= 0) & (plan.assignment < problem.num_experts)).all()
    assert plan.violations == {}
    assert plan.lp_bound is not None
    assert plan.value <= plan.lp_bound + 1e-9 * max(1.0, abs(plan.lp_bound))


# ------------------------------------------------------------- brute force
@pytest.mark.parametrize("seed", range(25))
def test_gem_is_optimal_in_count_mode(seed):
    problem = _tiny_instance(seed, "count")
    optimum, _ = _brute_force(problem)
    plan = make_plan(problem, "gem")
    _assert_valid(plan, problem)
    assert plan.value == pytest.approx(optimum, rel=1e-9, abs=1e-12)
    assert plan.lp_bound == pytest.approx(optimum, rel=1e-9, abs=1e-12)
    assert plan.ratio is None or plan.ratio == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("seed", range(25))
def test_gem_is_near_optimal_in_load_mode(seed):
    problem = _tiny_instance(seed, "load")
    optimum, best = _brute_force(problem)
    plan = make_plan(problem, "gem")
    _assert_valid(plan, problem)
    assert plan.value >= 0.99 * optimum - 1e-12, (
        f"gem {plan.value} < 0.99 * optimum {optimum}: costs={problem.costs.tolist()}, "
        f"loads={problem.loads.tolist()}, capacity={problem.capacity.tolist()}, "
        f"gem={plan.assignment.tolist()}, best={best.tolist()}"
    )


def _tight_load_instance():
    costs = [[-0.02, 0.24, 0.58], [0.8, 0.62, -0.07], [0.69, 0.44, 0.75], [0.11, 0.38, 0.41], [0.36, -0.05, 0.58]]
    return AssignmentProblem.load(costs, [7, 5, 8, 9, 8], [15.5, 13, 14])


def test_tight_load_instance_optimum():
    problem = _tight_load_instance()
    optimum, best = _brute_force(problem)
    assert best.tolist() == [0, 1, 1, 2, 0] and optimum == pytest.approx(1.81)
    assert make_plan(problem, "exact", StrategyOptions(time_limit=20)).value == pytest.approx(optimum)
    assert make_plan(problem, "gem").violations == {}


def test_gem_tiny_tight_load_instance_within_one_percent():
    problem = _tight_load_instance()
    assert make_plan(problem, "gem").value >= 0.99 * 1.81


@pytest.mark.parametrize("mode", ["count", "load"])
@pytest.mark.parametrize("seed", range(4))
def test_exact_matches_brute_force(mode, seed):
    problem = _tiny_instance(seed, mode)
    optimum, _ = _brute_force(problem)
    plan = make_plan(problem, "exact", StrategyOptions(time_limit=20))
    _assert_valid(plan, problem)
    assert plan.value == pytest.approx(optimum, rel=1e-9, abs=1e-12)
    assert plan.details["mip_status"] == "Optimal"


@pytest.mark.parametrize("seed", range(3))
def test_gem_equals_mip_in_count_mode(seed):
    problem = AssignmentProblem.count(random_affinity(40, 6, seed), 7 + seed)
    gem = make_plan(problem, "gem")
    exact = make_plan(problem, "exact", StrategyOptions(time_limit=20))
    assert exact.details["mip_status"] == "Optimal"
    assert gem.value == pytest.approx(exact.value, rel=1e-9)
    assert gem.violations == {} and exact.violations == {}
    # Count mode: the LP vertex is integral, so the rounding keeps it and nothing is repaired.
    assert gem.details["lp_fractional_entries"] == 0
    assert gem.details["repaired_tasks"] == 0
    assert (gem.placed_round == 1).all()


@pytest.mark.slow
def test_gem_load_quality_against_mip():
    """100x16 heavy-tailed loads: gem stays within 1% of the proven optimum and never overloads."""
    for slack in (1.1, 1.25):
        for seed in range(4):
            loads = heavy_tailed_loads(100, seed)
            problem = AssignmentProblem.load(random_affinity(100, 16, seed), loads, load_capacity(loads, 16, slack))
            gem = make_plan(problem, "gem", StrategyOptions(time_limit=30))
            exact = make_plan(problem, "exact", StrategyOptions(time_limit=30))
            assert gem.violations == {}
            assert (gem.assignment >= 0).all()
            assert gem.value <= gem.lp_bound + 1e-9
            assert gem.value >= 0.99 * exact.value, (slack, seed, gem.value, exact.value)


# ------------------------------------------------------ capacity properties
@st.composite
def _instances(draw):
    n = draw(st.integers(1, 7))
    e = draw(st.integers(1, 3))
    # Costs on a 1/100 grid: differences far above HiGHS's 1e-7 tolerances (tolerances are tested on their own below).
    cost = st.integers(-100, 100).map(lambda k: k / 100)
    costs = np.array(draw(st.lists(cost, min_size=n * e, max_size=n * e))).reshape(n, e)
    if draw(st.booleans()):
        capacity = draw(st.lists(st.integers(1, n), min_size=e, max_size=e))
        return costs, None, capacity
    loads = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    capacity = draw(st.lists(st.integers(1, 20), min_size=e, max_size=e))
    return costs, loads, capacity


def _build(costs, loads, capacity):
    try:
        if loads is None:
            return AssignmentProblem.count(costs, capacity)
        return AssignmentProblem.load(costs, loads, capacity)
    except InfeasiblePlanError:
        return None


@pytest.mark.parametrize("strategy", CAPACITY_RESPECTING)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(instance=_instances())
def test_capacity_respecting_strategies(strategy, instance):
    problem = _build(*instance)
    assume(problem is not None)
    optimum, _ = _brute_force(problem)
    try:
        plan = make_plan(problem, strategy)
    except InfeasiblePlanError as error:
        # Only allowed when no integral plan exists at all, and it must say which tasks.
        assert optimum == -np.inf
        assert error.tasks and set(error.tasks) <= set(problem.task_names)
        return
    assert np.isfinite(optimum)
    _assert_valid(plan, problem)
    assert plan.value <= optimum + 1e-9
    assert plan.strategy == strategy
    assert plan.mapping.keys() == set(problem.task_names)


def test_lp_bound_and_gem_resolve_affinity_differences_of_1e_7():
    problem = AssignmentProblem.count([[0.0, 0.0], [1e-7, 0.0]], 1)
    plan = make_plan(problem, "gem")
    assert plan.lp_bound >= 1e-7 - 1e-12
    assert plan.value == pytest.approx(1e-7, rel=1e-9)


# ------------------------------------------------------------ paper example
def _argmax_example():
    costs = np.array([[0.9, 0.5, 0.1], [0.8, 0.6, 0.2], [0.7, 0.1, 0.4]])
    return AssignmentProblem.count(costs, 2, ["D1", "D2", "D3"], ["E1", "E2", "E3"])


def test_argmax_overloads_where_gem_does_not():
    problem = _argmax_example()
    argmax = make_plan(problem, "argmax")
    assert argmax.tasks_of("E1") == ("D1", "D2", "D3")
    assert argmax.violations == {"E1": 1.0}
    assert argmax.details == {"ignores_capacity": True}
    assert argmax.value > argmax.lp_bound  # infeasible plans can beat the bound

    gem = make_plan(problem, "gem")
    assert gem.violations == {}
    assert len(gem.tasks_of("E1")) == 2
    # The optimum moves D2 off E1 (cheapest loss: 0.8 -> 0.6; moving D3 would cost 0.7 -> 0.4).
    assert gem.mapping == {"D1": "E1", "D2": "E2", "D3": "E1"}
    assert gem.value == pytest.approx(0.9 + 0.6 + 0.7, rel=1e-12)
    assert gem.value == pytest.approx(gem.lp_bound, rel=1e-12)


# -------------------------------------------------------- expert_centric
def test_expert_centric_conflicts_and_orphans():
    costs = np.array(
        [
            [0.9, 0.8],  # t0: claimed by E0 only
            [0.8, 0.9],  # t1: claimed by both (conflict) -> E1, its higher affinity
            [0.7, 0.95],  # t2: claimed by E1 only
            [0.1, 0.1],  # t3: nobody's top 2 (orphan) -> the only expert with room, E0
        ]
    )
    problem = AssignmentProblem.count(costs, 2, ["t0", "t1", "t2", "t3"], ["E0", "E1"])
    plan = make_plan(problem, "expert_centric")
    assert plan.details["conflicts"] == 1
    assert plan.details["orphans"] == 1
    assert plan.assignment.tolist() == [0, 1, 1, 0]
    assert plan.violations == {}


def test_expert_centric_without_conflicts_has_no_orphans():
    problem = AssignmentProblem.count(np.eye(3), 1)
    plan = make_plan(problem, "expert_centric")
    assert plan.details == {"conflicts": 0, "orphans": 0}
    assert plan.assignment.tolist() == [0, 1, 2]


def test_expert_centric_all_want_the_same_tasks():
    # Both experts claim t0, t1 (conflicts 2) and nobody claims t2, t3 (orphans 2).
    costs = np.array([[0.9, 0.8], [0.8, 0.7], [0.1, 0.2], [0.05, 0.1]])
    plan = make_plan(AssignmentProblem.count(costs, 2), "expert_centric")
    assert plan.details["conflicts"] == 2 and plan.details["orphans"] == 2
    assert plan.assignment.tolist() == [0, 0, 1, 1]


# ------------------------------------------------------------ determinism
def test_random_strategy_is_seeded():
    problem = AssignmentProblem.count(random_affinity(200, 8, 0), 30)
    first = make_plan(problem, "random", StrategyOptions(seed=3))
    again = make_plan(problem, "random", StrategyOptions(seed=3))
    other = make_plan(problem, "random", StrategyOptions(seed=4))
    np.testing.assert_array_equal(first.assignment, again.assignment)
    assert not np.array_equal(first.assignment, other.assignment)
    assert first.details["seed"] == 3 and other.details["seed"] == 4
    assert first.violations == {} and other.violations == {}


def _determinism_problems():
    loads = heavy_tailed_loads(60, 5)
    return [
        AssignmentProblem.count(random_affinity(60, 6, 5), 11),
        AssignmentProblem.load(random_affinity(60, 6, 5), loads, load_capacity(loads, 6, 1.15)),
    ]


@pytest.mark.parametrize("strategy", DETERMINISTIC)
@pytest.mark.parametrize("index", [0, 1], ids=["count", "load"])
def test_plans_are_byte_identical(strategy, index):
    problem = _determinism_problems()[index]
    options = StrategyOptions(precision=8, seed=7, time_limit=20)
    first, second = make_plan(problem, strategy, options), make_plan(problem, strategy, options)
    assert first.to_json() == second.to_json()
    # A freshly built, equal problem gives the same plan too.
    rebuilt = _determinism_problems()[index]
    assert make_plan(rebuilt, strategy, options).to_json() == first.to_json()


# ------------------------------------------------------------ infeasibility
def test_gem_reports_an_integrally_infeasible_load_instance():
    # Total load 6 <= total capacity 6 and every load fits an expert, so the LP is feasible,
    # but any expert can hold only one task of load 2: no integral plan exists.
    costs = np.array([[1.0, 0.5], [0.5, 1.0], [0.7, 0.7]])
    problem = AssignmentProblem.load(costs, [2.0, 2.0, 2.0], 3.0, ["a", "b", "c"], ["x", "y"])
    assert _brute_force(problem)[0] == -np.inf
    with pytest.raises(InfeasiblePlanError) as info:
        make_plan(problem, "gem")
    assert info.value.tasks
    assert set(info.value.tasks) <= {"a", "b", "c"}
    assert any(repr(name) in str(info.value) for name in info.value.tasks)
