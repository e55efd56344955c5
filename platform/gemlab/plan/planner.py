"""``make_plan``: one call from an assignment problem to a ``Plan``.

It runs the named strategy, checks the result against the capacities (a plan
that overloads an expert is only ever returned by a strategy that ignores
capacity on purpose), attaches the LP bound so that every strategy reports
value / bound on the same scale, and records timings.
"""

from __future__ import annotations

import time

import numpy as np

from gemlab.plan.errors import PlanInputError
from gemlab.plan.lp import solve_relaxation
from gemlab.plan.plan import Plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.strategies import IGNORES_CAPACITY, STRATEGIES, StrategyOptions, validate_options


def make_plan(
    problem: AssignmentProblem,
    strategy: str = "gem",
    options: StrategyOptions | None = None,
    *,
    with_bound: bool = True,
) -> Plan:
    """Plan ``problem`` with ``strategy`` (a key of ``STRATEGIES``).

    ``with_bound`` solves the LP relaxation for strategies that do not, so
    their plans carry the same value / LP ratio. Raises PlanInputError for an
    unknown strategy or bad options and InfeasiblePlanError when no plan
    within capacity exists or could be found.
    """
    if strategy not in STRATEGIES:
        raise PlanInputError(f"strategy: unknown {strategy!r}; choose one of {sorted(STRATEGIES)}")
    options = validate_options(options or StrategyOptions())
    start = time.perf_counter()
    outcome = STRATEGIES[strategy](problem, options)
    timings = {"strategy": time.perf_counter() - start}
    if outcome.lp is not None:
        timings["lp"] = outcome.lp.seconds
    lp = outcome.lp
    if lp is None and with_bound:
        lp = solve_relaxation(problem)
        timings["bound_lp"] = lp.seconds
    overload = problem.overload(outcome.assignment)
    if strategy not in IGNORES_CAPACITY and overload.any():
        raise AssertionError(f"strategy {strategy!r} overloaded experts {np.flatnonzero(overload).tolist()}")
    return Plan(
        task_names=problem.task_names,
        expert_names=problem.expert_names,
        assignment=outcome.assignment,
        costs=problem.costs,
        loads=problem.loads,
        capacity=problem.capacity,
        capacity_mode=problem.mode,
        strategy=strategy,
        precision=options.precision if strategy == "gem" else None,
        lp_bound=lp.value if lp is not None and lp.status == "Optimal" else None,
        fractional=outcome.lp.x if outcome.lp is not None else None,
        placed_round=outcome.placed_round,
        details=outcome.details,
        timings=timings,
    )
