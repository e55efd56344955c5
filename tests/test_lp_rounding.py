"""The LP relaxation (full vs column generation) and the bit-scaling compiler."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemlab.plan.errors import PlanInputError
from gemlab.plan.lp import solve_relaxation
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.rounding import bit_scaling_round
from gemlab.plan.synthetic import heavy_tailed_loads, load_capacity, random_affinity


def _count_problem(n, e, seed, slack=1.1):
    return AssignmentProblem.count(random_affinity(n, e, seed), int(np.ceil(slack * n / e)))


def _load_problem(n, e, seed, slack=1.2):
    loads = heavy_tailed_loads(n, seed)
    return AssignmentProblem.load(random_affinity(n, e, seed), loads, load_capacity(loads, e, slack))


def _brute_force_optimum(problem):
    """Best value over every integral assignment within capacity (-inf if none)."""
    best = -np.inf
    for choice in itertools.product(range(problem.num_experts), repeat=problem.num_tasks):
        assignment = np.array(choice)
        if not problem.overload(assignment).any():
            best = max(best, problem.value(assignment))
    return best


def _assert_lp_feasible(problem, lp):
    x = lp.x
    assert x.shape == problem.costs.shape
    assert (x >= 0).all() and (x <= 1).all()
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-6)
    used = problem.loads @ x
    assert (used <= problem.capacity * (1 + 1e-7) + 1e-6).all()
    assert float((problem.costs * x).sum()) == pytest.approx(lp.value, rel=1e-6, abs=1e-6)


# ------------------------------------------------------------------------- LP
@pytest.mark.parametrize("mode", ["count", "load"])
@pytest.mark.parametrize(("n", "e", "seeds"), [(30, 5, (0, 1, 2)), (200, 16, (0, 1)), (1000, 32, (0,))])
def test_full_and_column_generation_agree(mode, n, e, seeds):
    build = _count_problem if mode == "count" else _load_problem
    for seed in seeds:
        problem = build(n, e, seed)
        full = solve_relaxation(problem, method="full")
        priced = solve_relaxation(problem, method="column_generation")
        assert full.status == priced.status == "Optimal"
        assert full.method == "full" and priced.method == "column_generation"
        assert full.pricing_rounds == 1 and full.columns == n * e
        assert priced.pricing_rounds >= 1 and priced.columns <= n * e
        assert priced.value == pytest.approx(full.value, rel=1e-9)
        _assert_lp_feasible(problem, full)
        _assert_lp_feasible(problem, priced)


def test_auto_method_switches_on_size():
    assert solve_relaxation(_count_problem(12, 8, 0)).method == "full"
    assert solve_relaxation(_count_problem(200, 16, 0)).method == "column_generation"


def test_column_generation_with_a_single_expert():
    problem = AssignmentProblem.count(random_affinity(5, 1, 0), 5)
    lp = solve_relaxation(problem, method="column_generation")
    assert lp.status == "Optimal"
    np.testing.assert_array_equal(lp.x, np.ones((5, 1)))
    assert lp.value == pytest.approx(problem.costs.sum(), rel=1e-12)


@pytest.mark.parametrize("method", ["full", "column_generation"])
@pytest.mark.parametrize("seed", range(5))
def test_count_mode_lp_is_integral(method, seed):
    """The count-mode constraint matrix is totally unimodular: a simplex vertex has no fractions."""
    n, e = (40, 6) if seed % 2 else (120, 8)
    problem = _count_problem(n, e, seed, slack=1.0 + 0.1 * seed)
    lp = solve_relaxation(problem, method=method)
    assert lp.status == "Optimal"
    assert lp.num_fractional == 0
    assert set(np.unique(lp.x).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(lp.x.sum(axis=1), np.ones(n))


def test_load_mode_lp_can_be_fractional_with_few_split_tasks():
    problem = _load_problem(200, 16, 0)
    lp = solve_relaxation(problem, method="full")
    split_tasks = int(((lp.x > 0) & (lp.x < 1)).any(axis=1).sum())
    # A basic solution has at most N + E nonzeros, so at most E tasks are split.
    assert 0 < split_tasks <= problem.num_experts


@pytest.mark.parametrize("seed", range(12))
def test_lp_value_bounds_every_integral_plan(seed):
    rng = np.random.default_rng(seed)
    n, e = int(rng.integers(2, 7)), int(rng.integers(2, 4))
    costs = rng.uniform(-0.5, 1.0, (n, e))
    if seed % 2:
        capacity = rng.integers(1, n + 1, e)
        capacity[0] = max(capacity[0], n - capacity[1:].sum())
        problem = AssignmentProblem.count(costs, capacity)
    else:
        loads = rng.integers(1, 6, n).astype(float)
        capacity = np.full(e, max(loads.max(), 0.7 * loads.sum() / e + loads.max()))
        problem = AssignmentProblem.load(costs, loads, capacity)
    optimum = _brute_force_optimum(problem)
    assert np.isfinite(optimum)
    for method in ("full", "column_generation"):
        lp = solve_relaxation(problem, method=method)
        assert lp.value >= optimum - 1e-9
        if problem.mode == "count":
            assert lp.value == pytest.approx(optimum, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------- rounding
def _integral_x(assignment, num_experts):
    x = np.zeros((len(assignment), num_experts))
    x[np.arange(len(assignment)), assignment] = 1.0
    return x


@pytest.mark.parametrize("precision", [1, 8, 30])
@pytest.mark.parametrize("mode", ["count", "load"])
def test_integral_plan_is_reproduced_in_round_one(precision, mode):
    rng = np.random.default_rng(precision)
    n, e = 30, 5
    assignment = rng.integers(0, e, n)
    # Make every expert's capacity exactly what the assignment uses (tight), and
    # skew the costs so that greedy-by-affinity would choose differently.
    costs = rng.uniform(0, 1, (n, e))
    costs[np.arange(n), assignment] = 0.0
    if mode == "count":
        capacity = np.maximum(np.bincount(assignment, minlength=e), 1)
        problem = AssignmentProblem.count(costs, capacity)
    else:
        loads = rng.integers(1, 50, n).astype(float)
        capacity = np.maximum(np.bincount(assignment, weights=loads, minlength=e), 1.0)
        problem = AssignmentProblem.load(costs, loads, capacity)
    rounding = bit_scaling_round(problem, _integral_x(assignment, e), precision)
    np.testing.assert_array_equal(rounding.assignment, assignment)
    np.testing.assert_array_equal(rounding.placed_round, np.ones(n))
    assert rounding.fallback_count == 0 and rounding.precision == precision


def test_bits_decide_the_round_not_affinity():
    # Affinity prefers the swapped plan, but round 1 only sees the high bit (0.75 = 0.11b, 0.25 = 0.01b).
    problem = AssignmentProblem.count([[0.1, 0.9], [0.9, 0.1]], 1)
    x = np.array([[0.75, 0.25], [0.25, 0.75]])
    for precision in (1, 2, 8):
        rounding = bit_scaling_round(problem, x, precision)
        assert rounding.assignment.tolist() == [0, 1]
        assert rounding.placed_round.tolist() == [1, 1]


def _round_two_problem():
    # task0 x = [0.5, 0.5, 0] -> round 1 on expert1 (higher affinity); that fills expert1.
    # task1 x = [0.25, 0.75, 0]: round 1 candidate expert1 is full; bit 2 of 0.25 (0.01b) makes
    # expert0 a candidate in round 2; the fallback would rather pick expert2 (0.55 > 0.5).
    problem = AssignmentProblem.count([[0.2, 0.9, 0.0], [0.5, 0.6, 0.55]], 1)
    x = np.array([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]])
    return problem, x


@pytest.mark.parametrize("precision", [2, 3, 8, 30])
def test_task_placed_by_its_second_bit(precision):
    problem, x = _round_two_problem()
    rounding = bit_scaling_round(problem, x, precision)
    assert rounding.assignment.tolist() == [1, 0]
    assert rounding.placed_round.tolist() == [1, 2]
    assert rounding.fallback_count == 0


def test_precision_one_falls_back_after_round_one():
    problem, x = _round_two_problem()
    rounding = bit_scaling_round(problem, x, 1)
    # 0.25 has no bit 1, and 0.75 -> min(0.75, 0.5) = 0.5 points at the full expert1.
    assert rounding.assignment.tolist() == [1, 2]
    assert rounding.placed_round.tolist() == [1, 2]  # round p + 1 = 2 is the fallback
    assert rounding.fallback_count == 1


@pytest.mark.parametrize(("precision", "fallbacks"), [(1, 1), (2, 0), (3, 0), (30, 0)])
def test_quarter_fractions_only_have_bit_two(precision, fallbacks):
    # x = 1/4 = 0.01b on every expert: only bit 2 is set. From p = 2 the task is a candidate in
    # round 2; with p = 1 it has no candidate and the fallback (round p + 1 = 2) places it.
    # Either way the best-affinity expert wins.
    problem = AssignmentProblem.count([[0.1, 0.4, 0.3, 0.2]], 1)
    rounding = bit_scaling_round(problem, np.full((1, 4), 0.25), precision)
    assert rounding.assignment.tolist() == [1]
    assert rounding.placed_round.tolist() == [2]
    assert rounding.fallback_count == fallbacks


def test_eighth_fractions_wait_for_round_three():
    problem = AssignmentProblem.count([[0.1 * k for k in range(8)]], 1)
    x = np.full((1, 8), 0.125)  # 0.001b
    assert bit_scaling_round(problem, x, 3).placed_round.tolist() == [3]
    assert bit_scaling_round(problem, x, 2).placed_round.tolist() == [3]  # fallback p + 1
    assert bit_scaling_round(problem, x, 2).fallback_count == 1
    assert bit_scaling_round(problem, x, 3).fallback_count == 0
    assert bit_scaling_round(problem, x, 8).assignment.tolist() == [7]


def test_ties_between_tasks_go_to_the_lower_task_index():
    problem = AssignmentProblem.count([[0.5, 0.1], [0.5, 0.1], [0.5, 0.1]], [1, 2])
    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    rounding = bit_scaling_round(problem, x, 4)
    assert rounding.assignment.tolist() == [0, 1, 1]
    assert rounding.placed_round.tolist() == [1, 5, 5]


def test_ties_between_experts_go_to_the_lower_expert_index():
    problem = AssignmentProblem.count([[0.3, 0.3, 0.3]], 1)
    rounding = bit_scaling_round(problem, np.array([[0.0, 0.5, 0.5]]), 4)
    assert rounding.assignment.tolist() == [1]
    fallback = bit_scaling_round(problem, np.zeros((1, 3)), 4)
    assert fallback.assignment.tolist() == [0] and fallback.placed_round.tolist() == [5]


def test_higher_affinity_is_served_first_within_a_round():
    problem = AssignmentProblem.count([[0.2, 0.0], [0.9, 0.0]], 1)
    rounding = bit_scaling_round(problem, np.array([[0.5, 0.5], [0.5, 0.5]]), 8)
    assert rounding.assignment.tolist() == [1, 0]


def test_fallback_places_heaviest_first_then_by_index():
    costs = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    problem = AssignmentProblem.load(costs, [1.0, 2.0, 1.0], [2.0, 2.0])
    rounding = bit_scaling_round(problem, np.zeros((3, 2)), 3)
    # Task1 (load 2) first takes expert0; then task0 and task2 (equal loads, index order) share expert1.
    assert rounding.assignment.tolist() == [1, 0, 1]
    assert rounding.placed_round.tolist() == [4, 4, 4]
    assert rounding.fallback_count == 3


def test_task_that_fits_nowhere_stays_unplaced():
    problem = AssignmentProblem.load([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [2.0, 2.0, 2.0], [3.0, 3.0])
    x = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    rounding = bit_scaling_round(problem, x, 8)
    assert rounding.assignment.tolist() == [0, -1, 1]
    assert rounding.placed_round.tolist() == [1, 0, 1]


def test_shape_mismatch_is_refused():
    problem = AssignmentProblem.count(np.ones((3, 2)), 2)
    for shape in [(3, 3), (2, 2), (6,), (2, 3)]:
        with pytest.raises(PlanInputError, match=r"fractional plan: shape"):
            bit_scaling_round(problem, np.zeros(shape), 8)


@pytest.mark.parametrize("precision", [0, 31, 1.5, True])
def test_bad_precision_is_refused(precision):
    problem = AssignmentProblem.count(np.ones((3, 2)), 2)
    with pytest.raises(PlanInputError, match="precision"):
        bit_scaling_round(problem, np.zeros((3, 2)), precision)


@st.composite
def _fractional_instances(draw):
    n = draw(st.integers(1, 9))
    e = draw(st.integers(1, 4))
    unit = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)
    costs = np.array(draw(st.lists(unit, min_size=n * e, max_size=n * e))).reshape(n, e)
    raw = np.array(draw(st.lists(unit, min_size=n * e, max_size=n * e))).reshape(n, e)
    if draw(st.booleans()):  # rows of an LP plan sum to 1; also try arbitrary entries
        sums = raw.sum(axis=1, keepdims=True)
        raw = np.where(sums > 0, raw / np.where(sums > 0, sums, 1.0), 1.0 / e)
    if draw(st.booleans()):
        capacity = draw(st.lists(st.integers(1, n), min_size=e, max_size=e))
        capacity[0] = max(capacity[0], n - sum(capacity[1:]))
        problem = AssignmentProblem.count(costs, capacity)
    else:
        loads = np.array(draw(st.lists(st.integers(0, 20), min_size=n, max_size=n)), dtype=float)
        top = max(loads.max(), 1.0)
        capacity = draw(st.lists(st.floats(top, 3 * top + loads.sum()), min_size=e, max_size=e))
        capacity[0] = max(capacity[0], loads.sum() - sum(capacity[1:]))
        problem = AssignmentProblem.load(costs, loads, capacity)
    return problem, raw, draw(st.integers(1, 30))


@settings(max_examples=60, deadline=None)
@given(_fractional_instances())
def test_rounding_never_exceeds_capacity(instance):
    problem, x, precision = instance
    rounding = bit_scaling_round(problem, x, precision)
    assignment, rounds = rounding.assignment, rounding.placed_round
    assert ((assignment >= -1) & (assignment < problem.num_experts)).all()
    assert not problem.overload(assignment).any()
    assert ((rounds > 0) == (assignment >= 0)).all()
    assert (rounds <= precision + 1).all()
    # A task placed in bit round k sits on an expert whose k-th bit (of min(x, 1 - 2^-p)) is set.
    digits = np.minimum(x, 1.0 - 2.0**-precision)
    for i in np.flatnonzero((rounds >= 1) & (rounds <= precision)):
        k, j = rounds[i], assignment[i]
        assert int(np.floor(digits[i, j] * 2.0**k)) & 1 == 1
    # Nothing stays unplaced while it would fit somewhere.
    residual = problem.capacity - problem.expert_load(assignment)
    for i in np.flatnonzero(assignment < 0):
        assert (problem.loads[i] > residual + 1e-9 * np.maximum(1.0, problem.capacity)).all()
