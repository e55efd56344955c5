"""Mapping strategies: GEM and the ablations it is compared with.

Each strategy turns an :class:`AssignmentProblem` into an integral
assignment plus the facts worth reporting about how it got there. They are
listed in one registry, ``STRATEGIES``, because sweeps and the CLI must name
them; :func:`gemlab.plan.planner.make_plan` wraps the result in a ``Plan``.

============== =============================================================
gem            LP relaxation (HiGHS) -> bit-scaling rounding -> repair
argmax         every task to its best expert, capacity ignored ("w/o rounding")
expert_centric every expert claims its best tasks ("fractional compiler")
random         seeded random expert among those with room
greedy         pairs by decreasing affinity while capacity allows
exact          HiGHS MIP with a time limit (reports the optimality gap)
============== =============================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gemlab.plan.errors import InfeasiblePlanError, PlanInputError
from gemlab.plan.exact import solve_mip
from gemlab.plan.lp import LPSolution, solve_relaxation
from gemlab.plan.problem import LOAD_TOLERANCE, AssignmentProblem
from gemlab.plan.repair import complete, improve, residual_neighbourhood, solve_residual
from gemlab.plan.rounding import bit_scaling_round, check_precision


@dataclass(frozen=True)
class StrategyOptions:
    precision: int = 8  # bits of the rounding (gem)
    repair: bool = True  # gem: re-solve a rounded plan below the LP bound (False: keep the compiler's own)
    seed: int = 0  # random strategy
    time_limit: float = 60.0  # seconds for any MIP solve (exact, repair)


@dataclass
class Outcome:
    """What a strategy produced; ``make_plan`` adds the bound, timings and names."""

    assignment: np.ndarray
    lp: LPSolution | None = None
    placed_round: np.ndarray | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _lp_or_raise(problem: AssignmentProblem) -> LPSolution:
    lp = solve_relaxation(problem)
    if lp.status != "Optimal":
        raise InfeasiblePlanError(
            f"the LP relaxation is {lp.status.lower()}: no plan, fractional or integral, fits the capacities",
            problem.task_names,
        )
    return lp


def _completed(problem: AssignmentProblem, assignment: np.ndarray, options: StrategyOptions, details: dict):
    """Place leftovers (-1) without overloading; record how."""
    if (assignment >= 0).all():
        return assignment
    completion = complete(problem, assignment, time_limit=options.time_limit)
    details["ejections"] = completion.ejections
    details["exact_completion"] = completion.exact
    return completion.assignment


def gem(problem: AssignmentProblem, options: StrategyOptions) -> Outcome:
    """The paper's planner-compiler, plus a repair step for load capacities.

    When the rounded plan already attains the LP bound it is optimal and is
    returned untouched (always the case in count mode, where the LP vertex is
    integral). Otherwise the tasks the LP split or the fallback placed are
    re-solved exactly on the capacity the others leave (the residual MIP),
    stranded tasks are placed by ejection or the full MIP, and local search
    polishes the result. See ``repair`` for each step.

    ``options.repair=False`` keeps the compiler's plan as the paper defines
    it -- the map then depends on the precision p wherever the LP is
    fractional -- and only places the tasks rounding left without room
    (ejection, else the MIP), since every task needs an expert.
    """
    lp = _lp_or_raise(problem)
    rounding = bit_scaling_round(problem, lp.x, options.precision)
    details: dict[str, Any] = {
        "lp_method": lp.method,
        "lp_status": lp.status,
        "lp_fractional_entries": lp.num_fractional,
        "fallback_tasks": rounding.fallback_count,
    }
    assignment = rounding.assignment
    below_bound = problem.value(assignment) < lp.value - 1e-9 * max(1.0, abs(lp.value))
    if not options.repair:
        details["repair"] = False
        assignment = _completed(problem, assignment, options, details)
    elif below_bound or (assignment < 0).any():
        details["rounded_value"] = problem.value(assignment)
        free = residual_neighbourhood(problem, lp.x, assignment, rounding.placed_round)
        residual = solve_residual(problem, assignment, free)
        details["residual_mip_tasks"] = len(free) if residual is not None else 0
        assignment = _completed(problem, assignment if residual is None else residual, options, details)
        assignment, details["improvement_steps"] = improve(problem, assignment)
    placed_round = rounding.placed_round.copy()
    repaired = assignment != rounding.assignment
    placed_round[repaired] = options.precision + 2
    details["repaired_tasks"] = int(np.count_nonzero(repaired))
    return Outcome(assignment, lp, placed_round, details)


def argmax(problem: AssignmentProblem, options: StrategyOptions) -> Outcome:
    """Each task to its highest-affinity expert (lowest index on ties); capacity is ignored."""
    return Outcome(np.argmax(problem.costs, axis=1), details={"ignores_capacity": True})


def _claims(problem: AssignmentProblem) -> np.ndarray:
    """claims[i, j]: expert j claims task i among its best tasks that fit its capacity."""
    claims = np.zeros(problem.costs.shape, dtype=bool)
    tasks = np.arange(problem.num_tasks)
    for j in range(problem.num_experts):
        order = tasks[np.lexsort((tasks, -problem.costs[:, j]))]
        fits = np.cumsum(problem.loads[order]) <= problem.capacity[j] * (1 + LOAD_TOLERANCE)
        claims[order[fits], j] = True
    return claims


def expert_centric(problem: AssignmentProblem, options: StrategyOptions) -> Outcome:
    """Every expert claims its best tasks, up to its capacity, without coordination.

    Resolution rule: a task claimed by several experts (a *conflict*) goes to
    the claimant with the highest affinity (lowest index on ties); the others
    do not re-claim, so their capacity stays partly unused. A task no expert
    claimed (an *orphan*) goes to its best expert that still has room, as in
    the rounding fallback, then to the repair step if none has.
    """
    claims = _claims(problem)
    claimants = claims.sum(axis=1)
    assignment = np.where(claimants > 0, np.argmax(np.where(claims, problem.costs, -np.inf), axis=1), -1)
    details: dict[str, Any] = {
        "conflicts": int(np.count_nonzero(claimants > 1)),
        "orphans": int(np.count_nonzero(claimants == 0)),
    }
    residual = problem.capacity - problem.expert_load(assignment)
    for i in np.flatnonzero(assignment < 0).tolist():
        room = residual + LOAD_TOLERANCE * np.maximum(1.0, problem.capacity) >= problem.loads[i]
        if room.any():
            assignment[i] = int(np.argmax(np.where(room, problem.costs[i], -np.inf)))
            residual[assignment[i]] -= problem.loads[i]
    return Outcome(_completed(problem, assignment, options, details), details=details)


def random(problem: AssignmentProblem, options: StrategyOptions) -> Outcome:
    """Tasks in a seeded random order, each to a seeded random expert with room."""
    rng = np.random.default_rng(options.seed)
    residual = problem.capacity.copy()
    slack = LOAD_TOLERANCE * np.maximum(1.0, problem.capacity)
    assignment = np.full(problem.num_tasks, -1, dtype=np.int64)
    for i in rng.permutation(problem.num_tasks).tolist():
        room = np.flatnonzero(residual + slack >= problem.loads[i])
        if len(room):
            assignment[i] = room[rng.integers(len(room))]
            residual[assignment[i]] -= problem.loads[i]
    details: dict[str, Any] = {"seed": options.seed}
    return Outcome(_completed(problem, assignment, options, details), details=details)


def greedy(problem: AssignmentProblem, options: StrategyOptions) -> Outcome:
    """(task, expert) pairs by decreasing affinity; a pair is taken while the expert has room."""
    n, e = problem.costs.shape
    flat = problem.costs.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))
    residual = problem.capacity.copy()
    slack = LOAD_TOLERANCE * np.maximum(1.0, problem.capacity)
    assignment = np.full(n, -1, dtype=np.int64)
    loads = problem.loads
    remaining = n
    for pair in order.tolist():
        i, j = divmod(pair, e)
        if assignment[i] < 0 and residual[j] + slack[j] >= loads[i]:
            assignment[i] = j
            residual[j] -= loads[i]
            remaining -= 1
            if remaining == 0:
                break
    details: dict[str, Any] = {}
    return Outcome(_completed(problem, assignment, options, details), details=details)


def exact(problem: AssignmentProblem, options: StrategyOptions) -> Outcome:
    """HiGHS MIP under a hard deadline; the gap says how far from proven optimal it stopped."""
    result = solve_mip(problem, time_limit=options.time_limit)
    if result.assignment is None:
        verdict = "no integral plan exists" if result.proven_infeasible else f"no plan found ({result.status})"
        raise InfeasiblePlanError(f"exact: {verdict}", problem.task_names)
    details = {"mip_status": result.status, "mip_gap": result.gap, "mip_bound": result.bound}
    return Outcome(result.assignment, details=details)


Strategy = Callable[[AssignmentProblem, StrategyOptions], Outcome]

STRATEGIES: dict[str, Strategy] = {
    "gem": gem,
    "argmax": argmax,
    "expert_centric": expert_centric,
    "random": random,
    "greedy": greedy,
    "exact": exact,
}

# Strategies whose plans may exceed capacity on purpose (an ablation).
IGNORES_CAPACITY = frozenset({"argmax"})


def validate_options(options: StrategyOptions) -> StrategyOptions:
    """Raise PlanInputError for a precision outside 1..30, a negative seed or a non-positive time limit."""
    check_precision(options.precision)
    if options.seed < 0:  # numpy's generators take no negative seeds
        raise PlanInputError(f"seed: must be >= 0, got {options.seed}")
    if not options.time_limit > 0:
        raise PlanInputError(f"time_limit: must be > 0 seconds, got {options.time_limit}")
    return options
