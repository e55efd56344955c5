"""The LP relaxation of the assignment problem, solved with HiGHS.

    maximise   sum_ij c_ij x_ij
    subject to sum_j x_ij = 1              for every task i
               sum_i w_i x_ij <= C_j        for every expert j
               0 <= x_ij <= 1

The matrix is built in bulk from numpy arrays (column-wise, two nonzeros per
variable), never one Python call per variable.

For large class-level problems (thousands of tasks) almost every task ends up
on one of its few best experts, so the solver is run by *column generation*:
a restricted LP over each task's best expert, priced with the duals
``u_i`` (task rows) and ``v_j`` (expert rows) that HiGHS returns; a missing
column (i, j) could improve the LP only if its reduced cost
``c_ij - u_i - w_i v_j`` is positive. Each task's best such column is added (HiGHS keeps its
basis and warm-starts) until none is left; the duals then certify that the
restricted optimum is the optimum of the full LP. To keep every restricted LP
feasible without a phase-1 heuristic, each task has an artificial "unplaced"
column with a large penalty; a certified optimum with all artificials at zero
is the full LP's optimum, and if an artificial stays positive the full LP is
solved directly to decide (that only happens for infeasible or pathological
inputs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import highspy
import numpy as np

from gemlab.plan.highs import new_highs
from gemlab.plan.problem import AssignmentProblem

LPMethod = Literal["auto", "full", "column_generation"]

# Below this many variables the whole LP is solved at once: the pricing loop
# costs more than it saves on small problems (12x8 solves in ~1 ms).
_FULL_LP_MAX_VARIABLES = 512
# Candidates per task in the first restricted LP: its best expert. Artificial
# columns keep that LP feasible; pricing adds the rest.
_INITIAL_CANDIDATES = 1
# A column enters when its reduced cost exceeds this (HiGHS's default dual
# feasibility tolerance is 1e-7; pricing is deliberately a bit stricter).
_PRICING_TOLERANCE = 1e-9
# Entries this close to 0 or 1 are snapped: they are solver noise, not fractions.
_SNAP = 1e-7


@dataclass(frozen=True)
class LPSolution:
    """The fractional plan and what the solver said about it."""

    x: np.ndarray  # (N, E) fractional assignment
    value: float  # LP optimum: an upper bound on the value of any integral plan
    status: str  # HiGHS model status, e.g. "Optimal"
    method: str  # "full" or "column_generation"
    pricing_rounds: int  # LP solves (1 for the full LP)
    columns: int  # variables in the final LP
    seconds: float

    @property
    def num_fractional(self) -> int:
        return int(np.count_nonzero((self.x > 0) & (self.x < 1)))


def _new_highs() -> highspy.Highs:
    highs = new_highs()
    # Simplex returns a vertex; in count mode that vertex is integral (TU matrix).
    highs.setOptionValue("solver", "simplex")
    return highs


def _column_entries(problem: AssignmentProblem, rows: np.ndarray, cols: np.ndarray, offset: int):
    """Column-wise nonzeros of variables (rows[k], cols[k]): task row, then expert row."""
    n = len(rows)
    index = np.empty(2 * n, dtype=np.int32)
    index[0::2] = rows
    index[1::2] = problem.num_tasks + cols
    value = np.empty(2 * n)
    value[0::2] = 1.0
    value[1::2] = problem.loads[rows]
    starts = offset + np.arange(0, 2 * n, 2, dtype=np.int32)
    return starts, index, value


def _build(problem: AssignmentProblem, rows: np.ndarray, cols: np.ndarray, penalty: float | None):
    """A HiGHS model over the given (task, expert) columns, plus artificials when penalised."""
    n_tasks, n_experts = problem.num_tasks, problem.num_experts
    n_art = n_tasks if penalty is not None else 0
    starts, index, value = _column_entries(problem, rows, cols, offset=n_art)
    lp = highspy.HighsLp()
    lp.num_col_ = n_art + len(rows)
    lp.num_row_ = n_tasks + n_experts
    lp.col_cost_ = np.concatenate([np.full(n_art, -(penalty or 0.0)), problem.costs[rows, cols]])
    lp.col_lower_ = np.zeros(lp.num_col_)
    lp.col_upper_ = np.ones(lp.num_col_)
    lp.row_lower_ = np.concatenate([np.ones(n_tasks), np.full(n_experts, -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate([np.ones(n_tasks), problem.capacity])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate([np.arange(n_art, dtype=np.int32), starts, [n_art + len(index)]])
    lp.a_matrix_.index_ = np.concatenate([np.arange(n_art, dtype=np.int32), index])
    lp.a_matrix_.value_ = np.concatenate([np.ones(n_art), value])
    lp.sense_ = highspy.ObjSense.kMaximize
    highs = _new_highs()
    highs.passModel(lp)
    return highs


def _fractional_plan(problem: AssignmentProblem, rows, cols, values) -> np.ndarray:
    x = np.zeros((problem.num_tasks, problem.num_experts))
    x[rows, cols] = values
    x[x < _SNAP] = 0.0
    x[x > 1 - _SNAP] = 1.0
    return x


def _status(highs: highspy.Highs) -> str:
    return highs.modelStatusToString(highs.getModelStatus())


def _solve_full(problem: AssignmentProblem, start: float) -> LPSolution:
    rows = np.repeat(np.arange(problem.num_tasks), problem.num_experts)
    cols = np.tile(np.arange(problem.num_experts), problem.num_tasks)
    highs = _build(problem, rows, cols, penalty=None)
    highs.run()
    status = _status(highs)
    if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return LPSolution(
            np.zeros(problem.costs.shape),
            float("nan"),
            status,
            "full",
            1,
            len(rows),
            time.perf_counter() - start,
        )
    values = np.asarray(highs.getSolution().col_value)
    return LPSolution(
        _fractional_plan(problem, rows, cols, values),
        float(highs.getInfo().objective_function_value),
        status,
        "full",
        1,
        len(rows),
        time.perf_counter() - start,
    )


def _solve_by_pricing(problem: AssignmentProblem, start: float) -> LPSolution:
    costs = problem.costs
    n_tasks, n_experts = costs.shape
    k = min(_INITIAL_CANDIDATES, n_experts)
    top = np.argpartition(-costs, k - 1, axis=1)[:, :k] if k < n_experts else None
    in_model = np.zeros(costs.shape, dtype=bool)
    if top is None:
        in_model[:] = True
    else:
        in_model[np.repeat(np.arange(n_tasks), k), top.ravel()] = True
    rows, cols = np.nonzero(in_model)
    # Larger than any gain from a chain of reassignments, so artificials are a last resort.
    penalty = (n_experts + 1) * (float(costs.max() - costs.min()) + 1.0)
    highs = _build(problem, rows, cols, penalty)
    rounds = 0
    while True:
        highs.run()
        rounds += 1
        if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return _solve_full(problem, start)
        duals = np.asarray(highs.getSolution().row_dual)
        reduced = costs - duals[:n_tasks, None] - problem.loads[:, None] * duals[None, n_tasks:]
        reduced[in_model] = -np.inf
        # Only each task's most attractive column enters: adding every positive
        # one floods the LP with columns that the next duals no longer want.
        best = np.argmax(reduced, axis=1)
        new_rows = np.flatnonzero(reduced[np.arange(n_tasks), best] > _PRICING_TOLERANCE)
        new_cols = best[new_rows]
        if len(new_rows) == 0:
            break
        in_model[new_rows, new_cols] = True
        starts, index, value = _column_entries(problem, new_rows, new_cols, offset=0)
        n = len(new_rows)
        highs.addCols(n, costs[new_rows, new_cols], np.zeros(n), np.ones(n), len(index), starts, index, value)
        rows = np.concatenate([rows, new_rows])
        cols = np.concatenate([cols, new_cols])
    values = np.asarray(highs.getSolution().col_value)
    if values[:n_tasks].max(initial=0.0) > _SNAP:
        return _solve_full(problem, start)
    return LPSolution(
        _fractional_plan(problem, rows, cols, values[n_tasks:]),
        float(highs.getInfo().objective_function_value),
        _status(highs),
        "column_generation",
        rounds,
        len(rows),
        time.perf_counter() - start,
    )


def solve_relaxation(problem: AssignmentProblem, method: LPMethod = "auto") -> LPSolution:
    """Solve the LP relaxation; ``auto`` picks column generation for large problems.

    Never raises for a solver outcome: a non-optimal status (e.g. "Infeasible")
    is returned in ``status`` with ``value`` NaN, for the caller to report.
    """
    start = time.perf_counter()
    if method == "full" or (method == "auto" and problem.costs.size <= _FULL_LP_MAX_VARIABLES):
        return _solve_full(problem, start)
    return _solve_by_pricing(problem, start)
