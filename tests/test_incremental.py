"""Re-planning keeps existing assignments where capacity allows and reports moves."""

import numpy as np

from gemlab.plan.incremental import replan
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.synthetic import random_affinity


def _problem(n, capacity, seed=0):
    costs = random_affinity(n, 4, seed)
    return AssignmentProblem.count(costs, capacity, [f"d{i}" for i in range(n)])


def test_adding_tasks_keeps_previous_assignments_when_room():
    full = _problem(10, 4)
    first = make_plan(AssignmentProblem.count(full.costs[:8], 4, full.task_names[:8]), "gem")
    result = replan(first, full)
    assert result.kept_all and result.moved == () and result.added == ("d8", "d9")
    for task, expert in first.mapping.items():
        assert result.plan.mapping[task] == expert
    assert not result.plan.violations and result.plan.ratio <= 1.0 + 1e-12


def test_full_replan_reports_moves_when_capacity_is_short():
    costs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.9]])
    names = ["a", "b", "c", "d", "e"]
    first = make_plan(AssignmentProblem.count(costs[:3], 3, names[:3]), "gem")  # a, b, c
    first_mapping = first.mapping
    # Now two slots per expert... plus 'e' and 'd' both want expert1: something must move.
    grown = AssignmentProblem.count(costs, [3, 2], names)
    result = replan(first, grown)
    assert not result.plan.violations
    assert result.added == ("d", "e")
    for task, old, new in result.moved:
        assert first_mapping[task] == old and result.plan.mapping[task] == new
    changed = {t for t in first_mapping if first_mapping[t] != result.plan.mapping[t]}
    assert changed == {task for task, _, _ in result.moved}


def test_removed_tasks_are_dropped():
    full = _problem(6, 3)
    first = make_plan(full, "gem")
    smaller = AssignmentProblem.count(full.costs[:4], 3, full.task_names[:4])
    result = replan(first, smaller)
    assert result.removed == ("d4", "d5") and result.kept_all
