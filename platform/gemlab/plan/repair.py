"""Repair and polish an integral plan: place what rounding could not, then improve.

The bit-scaling compiler never overloads an expert, but in load mode its
fallback can strand a task that fits nowhere even though a feasible plan
exists (the capacity it needs is spread over several experts). Two steps fix
that, in order of cost:

1. *Residual MIP*: keep the tasks the LP placed integrally where the
   rounding put them, and solve the small MIP over the rest (the LP's
   fractional tasks and whatever the fallback touched) on the capacity left
   over. It is exact for that neighbourhood and takes milliseconds because
   the LP leaves at most E + ... fractional rows (a basic solution of the
   LP has at most N + E nonzeros, so at most E tasks are split).
2. *Ejection*: place a stranded task on expert j by moving one task already
   on j to another expert with room -- the cheapest such pair of moves.
3. *Exact completion*: when ejection fails and the problem is small enough,
   the HiGHS MIP decides: it returns a feasible plan or proves that none
   exists (then :class:`InfeasiblePlanError` names the stranded tasks).

:func:`improve` then applies improving moves (one task to a better expert
with room) and swaps (two tasks trade experts) until none is left. It never
breaks capacity and strictly increases the value at every step, so it ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gemlab.plan.errors import InfeasiblePlanError
from gemlab.plan.exact import solve_mip, solve_subproblem_in_process
from gemlab.plan.problem import LOAD_TOLERANCE, AssignmentProblem

# Exact completion is attempted up to this many variables (100x16 solves in
# well under a second; 1,203x64 load instances can take minutes).
EXACT_COMPLETION_MAX_VARIABLES = 20_000
# The residual MIP is tried up to this many free variables.
RESIDUAL_MIP_MAX_VARIABLES = 5_000
# ... and grown to at least this many: on small problems the neighbourhood
# then covers everything and the residual MIP is exact, in milliseconds.
RESIDUAL_MIP_MIN_VARIABLES = 256
_RESIDUAL_MIP_SECONDS = 2.0
# Swaps need an N x N gain matrix; beyond this many tasks only moves are tried.
SWAP_MAX_TASKS = 2_000
_GAIN_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Completion:
    assignment: np.ndarray
    ejections: int  # stranded tasks placed by moving another task
    exact: bool  # True when the MIP had to supply the plan


def _slack(problem: AssignmentProblem) -> np.ndarray:
    return LOAD_TOLERANCE * np.maximum(1.0, problem.capacity)


def _residual(problem: AssignmentProblem, assignment: np.ndarray) -> np.ndarray:
    return problem.capacity - problem.expert_load(assignment)


def _best_ejection(problem: AssignmentProblem, assignment: np.ndarray, task: int):
    """Best (expert for ``task``, task to move, its new expert), or None."""
    residual = _residual(problem, assignment) + _slack(problem)
    loads, costs = problem.loads, problem.costs
    movable = np.flatnonzero(assignment >= 0)
    home = assignment[movable]
    frees_room = residual[home] + loads[movable] >= loads[task]
    movable, home = movable[frees_room], home[frees_room]
    if len(movable) == 0:
        return None
    fits = residual[None, :] >= loads[movable, None]  # (movable, E)
    fits[np.arange(len(movable)), home] = False
    gain = np.where(fits, costs[movable] - costs[movable, home][:, None] + costs[task, home][:, None], -np.inf)
    flat = int(np.argmax(gain))
    if not np.isfinite(gain.flat[flat]):
        return None
    m, k = divmod(flat, problem.num_experts)
    return int(home[m]), int(movable[m]), int(k)


def complete(problem: AssignmentProblem, assignment: np.ndarray, time_limit: float = 30.0) -> Completion:
    """Place every unplaced task (-1) without exceeding any capacity.

    Raises InfeasiblePlanError naming the tasks that cannot be placed: when the
    MIP proves no plan exists, or when the problem is too large for it (or it
    ran out of time) and ejection found no room.
    """
    assignment = assignment.copy()
    ejections = 0
    for task in np.flatnonzero(assignment < 0)[np.argsort(-problem.loads[assignment < 0], kind="stable")]:
        move = _best_ejection(problem, assignment, int(task))
        if move is None:
            continue
        home, moved, target = move
        assignment[moved] = target
        assignment[task] = home
        ejections += 1
    stranded = np.flatnonzero(assignment < 0)
    if len(stranded) == 0:
        return Completion(assignment, ejections, exact=False)
    names = tuple(problem.task_names[i] for i in stranded)
    if problem.costs.size > EXACT_COMPLETION_MAX_VARIABLES:
        raise InfeasiblePlanError(
            f"could not place {list(names)} within capacity, and the problem "
            f"({problem.num_tasks}x{problem.num_experts}) is too large to decide exactly; "
            "raise the capacities or lower the largest loads",
            names,
        )
    result = solve_mip(problem, time_limit=time_limit)
    if result.assignment is None:
        verdict = "no integral plan exists" if result.proven_infeasible else f"the MIP found none ({result.status})"
        raise InfeasiblePlanError(f"could not place {list(names)} within capacity: {verdict}", names)
    return Completion(result.assignment, ejections, exact=True)


def residual_neighbourhood(
    problem: AssignmentProblem, x: np.ndarray, assignment: np.ndarray, placed_round: np.ndarray
) -> np.ndarray:
    """Tasks to re-solve: split by the LP, not placed in round 1, or sharing an expert with a split task.

    Grown to ``RESIDUAL_MIP_MIN_VARIABLES`` free variables with the tasks that
    lose least by moving (smallest gap to their best other expert) -- the
    fixed tasks most likely to block a better plan.
    """
    split = (x == 1.0).sum(axis=1) == 0
    touched = (x[split] > 0).any(axis=0)
    free = split | (placed_round != 1) | touched[np.maximum(assignment, 0)]
    wanted = min(problem.num_tasks, -(-RESIDUAL_MIP_MIN_VARIABLES // problem.num_experts))
    missing = wanted - int(free.sum())
    if missing > 0:
        tasks = np.arange(problem.num_tasks)
        others = problem.costs.copy()
        others[tasks, assignment] = -np.inf
        regret = (
            problem.costs[tasks, assignment] - others.max(axis=1) if problem.num_experts > 1 else np.zeros(len(tasks))
        )
        regret[free] = np.inf
        free[np.lexsort((tasks, regret))[:missing]] = True
    return np.flatnonzero(free)


def solve_residual(problem: AssignmentProblem, assignment: np.ndarray, free: np.ndarray) -> np.ndarray | None:
    """Re-solve the ``free`` tasks exactly with everything else fixed; None if that has no plan.

    ``assignment`` must place every fixed task (it may leave free ones at -1).
    """
    if len(free) == 0 or len(free) * problem.num_experts > RESIDUAL_MIP_MAX_VARIABLES:
        return None
    fixed = np.ones(problem.num_tasks, dtype=bool)
    fixed[free] = False
    kept = np.where(fixed, assignment, -1)
    residual = np.maximum(problem.capacity - problem.expert_load(kept), 0.0) + _slack(problem)
    solution = solve_subproblem_in_process(problem.costs[free], problem.loads[free], residual, _RESIDUAL_MIP_SECONDS)
    if solution is None:
        return None
    kept[free] = solution
    return kept


def _best_move(problem: AssignmentProblem, assignment: np.ndarray, residual: np.ndarray):
    tasks = np.arange(problem.num_tasks)
    current = problem.costs[tasks, assignment]
    fits = residual[None, :] >= problem.loads[:, None]
    fits[tasks, assignment] = False
    gain = np.where(fits, problem.costs - current[:, None], -np.inf)
    flat = int(np.argmax(gain))
    return gain.flat[flat], divmod(flat, problem.num_experts)


def _best_swap(problem: AssignmentProblem, assignment: np.ndarray, residual: np.ndarray):
    loads, costs = problem.loads, problem.costs
    current = costs[np.arange(problem.num_tasks), assignment]
    across = costs[:, assignment]  # across[i, l] = c[i, a(l)]
    gain = across + across.T - current[:, None] - current[None, :]
    diff = loads[:, None] - loads[None, :]  # w_i - w_l
    feasible = (residual[assignment][None, :] >= diff) & (residual[assignment][:, None] >= -diff)
    feasible &= assignment[:, None] != assignment[None, :]
    gain = np.where(feasible, gain, -np.inf)
    flat = int(np.argmax(gain))
    return gain.flat[flat], divmod(flat, problem.num_tasks)


def improve(problem: AssignmentProblem, assignment: np.ndarray) -> tuple[np.ndarray, int]:
    """Local search: best improving move, else best improving swap, until neither exists.

    Returns the improved assignment and the number of steps taken. Swaps are
    skipped above ``SWAP_MAX_TASKS`` tasks (their gain matrix is N x N).
    """
    assignment = assignment.copy()
    residual = _residual(problem, assignment) + _slack(problem)
    steps = 0
    while True:
        gain, (i, k) = _best_move(problem, assignment, residual)
        if gain > _GAIN_TOLERANCE:
            residual[assignment[i]] += problem.loads[i]
            residual[k] -= problem.loads[i]
            assignment[i] = k
            steps += 1
            continue
        if problem.num_tasks > SWAP_MAX_TASKS:
            return assignment, steps
        gain, (i, m) = _best_swap(problem, assignment, residual)
        if gain <= _GAIN_TOLERANCE:
            return assignment, steps
        a, b = assignment[i], assignment[m]
        residual[a] += problem.loads[i] - problem.loads[m]
        residual[b] += problem.loads[m] - problem.loads[i]
        assignment[i], assignment[m] = b, a
        steps += 1
