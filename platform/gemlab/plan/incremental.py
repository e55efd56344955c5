"""Incremental re-planning: add datasets or classes without reshuffling the rest.

Training runs and checkpoints are tied to a plan: moving a task to another
expert throws away what that expert learnt about it. When tasks are added
(a new dataset, new classes), existing tasks therefore keep their experts
where capacity allows:

1. *Keep*: every task of the previous plan that is still present keeps its
   expert; only the new tasks are planned, on the capacity left over.
2. *Re-plan*: if the new tasks do not fit beside the kept ones, the whole
   problem is planned afresh and every task that changed expert is reported.

Tasks absent from the new problem are dropped; experts are matched by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gemlab.plan.errors import InfeasiblePlanError, PlanInputError
from gemlab.plan.lp import solve_relaxation
from gemlab.plan.plan import Plan
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import LOAD_TOLERANCE, AssignmentProblem
from gemlab.plan.strategies import StrategyOptions


@dataclass(frozen=True)
class Replan:
    plan: Plan
    kept_all: bool  # True when step 1 sufficed
    added: tuple[str, ...]
    removed: tuple[str, ...]
    moved: tuple[tuple[str, str, str], ...]  # (task, previous expert, new expert)


def _sub_problem(problem: AssignmentProblem, tasks: np.ndarray, experts: np.ndarray, capacity: np.ndarray):
    names = ([problem.task_names[i] for i in tasks], [problem.expert_names[j] for j in experts])
    costs = problem.costs[np.ix_(tasks, experts)]
    if problem.mode == "count":
        return AssignmentProblem.count(costs, capacity, *names)
    return AssignmentProblem.load(costs, problem.loads[tasks], capacity, *names)


def _keep_and_extend(previous: Plan, problem: AssignmentProblem, strategy: str, options: StrategyOptions):
    """Step 1: the assignment with every kept task in place, or None if the new tasks do not fit."""
    expert_index = {name: j for j, name in enumerate(problem.expert_names)}
    before = previous.mapping
    assignment = np.array([expert_index.get(before.get(name, ""), -1) for name in problem.task_names])
    new = np.flatnonzero(assignment < 0)
    residual = problem.capacity - problem.expert_load(assignment)
    if (residual < -LOAD_TOLERANCE * np.maximum(1.0, problem.capacity)).any():
        return None
    if len(new) == 0:
        return assignment
    open_experts = np.flatnonzero(residual > LOAD_TOLERANCE * np.maximum(1.0, problem.capacity))
    if len(open_experts) == 0:
        return None
    try:
        sub = _sub_problem(problem, new, open_experts, residual[open_experts])
        sub_plan = make_plan(sub, strategy, options, with_bound=False)
    except InfeasiblePlanError:
        return None
    assignment[new] = open_experts[sub_plan.assignment]
    return assignment


def replan(
    previous: Plan,
    problem: AssignmentProblem,
    strategy: str = "gem",
    options: StrategyOptions | None = None,
) -> Replan:
    """Plan ``problem`` keeping ``previous``'s assignments where capacity allows.

    Raises PlanInputError if the capacity modes differ, and whatever
    ``make_plan`` raises if even a fresh plan is impossible.
    """
    if previous.capacity_mode != problem.mode:
        raise PlanInputError(f"replan: previous plan is in {previous.capacity_mode} mode, problem in {problem.mode}")
    options = options or StrategyOptions()
    before, now = set(previous.task_names), set(problem.task_names)
    added = tuple(name for name in problem.task_names if name not in before)
    removed = tuple(name for name in previous.task_names if name not in now)
    assignment = _keep_and_extend(previous, problem, strategy, options)
    if assignment is None:
        fresh = make_plan(problem, strategy, options)
        before = previous.mapping
        moved = tuple(
            (task, before[task], expert)
            for task, expert in fresh.mapping.items()
            if task in before and before[task] != expert
        )
        return Replan(fresh, False, added, removed, moved)
    lp = solve_relaxation(problem)
    plan = Plan(
        task_names=problem.task_names,
        expert_names=problem.expert_names,
        assignment=assignment,
        costs=problem.costs,
        loads=problem.loads,
        capacity=problem.capacity,
        capacity_mode=problem.mode,
        strategy=strategy,
        precision=options.precision if strategy == "gem" else None,
        lp_bound=lp.value if lp.status == "Optimal" else None,
        details={"incremental": "kept every previous assignment", "added_tasks": len(added)},
    )
    return Replan(plan, True, added, removed, ())
