"""The exact integral optimum by HiGHS's MIP solver, under a hard deadline.

HiGHS's own ``time_limit`` is checked only between branch-and-bound steps;
on large generalized-assignment instances it has overrun a 60 s limit by
minutes. The solve therefore runs in a child process that is killed at the
deadline, so callers (benchmarks, the ``exact`` strategy, the repair step)
always get control back.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import highspy
import numpy as np

from gemlab.plan.highs import new_highs
from gemlab.plan.problem import AssignmentProblem

# Time the child gets beyond HiGHS's own limit before it is killed: process
# start-up plus one branch-and-bound step.
_DEADLINE_GRACE = 5.0


@dataclass(frozen=True)
class MIPResult:
    assignment: np.ndarray | None  # best integral plan found, None if none
    value: float  # its value (NaN without a plan)
    bound: float  # best proven upper bound (NaN if unknown)
    gap: float  # relative optimality gap reported by HiGHS (0 when proven optimal)
    status: str
    seconds: float
    proven_infeasible: bool

    @property
    def optimal(self) -> bool:
        return self.status == "Optimal"


def _solve(costs: np.ndarray, loads: np.ndarray, capacity: np.ndarray, time_limit: float) -> dict:
    """Run HiGHS's MIP in this process; returns plain arrays for the parent."""
    n_tasks, n_experts = costs.shape
    n = costs.size
    highs = new_highs()
    highs.setOptionValue("time_limit", float(time_limit))
    highs.setOptionValue("mip_rel_gap", 0.0)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, n_tasks + n_experts
    lp.col_cost_ = costs.ravel()
    lp.col_lower_, lp.col_upper_ = np.zeros(n), np.ones(n)
    lp.row_lower_ = np.concatenate([np.ones(n_tasks), np.full(n_experts, -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate([np.ones(n_tasks), capacity])
    rows = np.repeat(np.arange(n_tasks), n_experts)
    cols = np.tile(np.arange(n_experts), n_tasks)
    index = np.empty(2 * n, dtype=np.int32)
    index[0::2], index[1::2] = rows, n_tasks + cols
    value = np.empty(2 * n)
    value[0::2], value[1::2] = 1.0, loads[rows]
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(0, 2 * n + 1, 2, dtype=np.int32)
    lp.a_matrix_.index_, lp.a_matrix_.value_ = index, value
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.integrality_ = [highspy.HighsVarType.kInteger] * n
    highs.passModel(lp)
    highs.run()
    info = highs.getInfo()
    has_solution = info.primal_solution_status == 2  # a feasible integral solution was found
    x = np.asarray(highs.getSolution().col_value).reshape(n_tasks, n_experts) if has_solution else None
    return {
        "assignment": np.argmax(x, axis=1) if has_solution else np.zeros(0, dtype=np.int64),
        "has_solution": np.array(has_solution),
        "bound": np.array(float(info.mip_dual_bound)),
        "gap": np.array(float(info.mip_gap)),
        "status": np.array(highs.modelStatusToString(highs.getModelStatus())),
        "infeasible": np.array(highs.getModelStatus() == highspy.HighsModelStatus.kInfeasible),
    }


def solve_mip(problem: AssignmentProblem, time_limit: float = 60.0) -> MIPResult:
    """Solve the integral assignment exactly (or as far as ``time_limit`` allows).

    The child is ``python -m gemlab.plan.exact REQUEST ANSWER`` with the
    instance in ``.npz`` files (HiGHS prints a banner on stdout, so stdout
    cannot carry data); unlike multiprocessing's spawn, it never re-imports
    the caller's main module. Never raises for a solver outcome: a timeout or
    a kill at the deadline is reported in ``status`` with no plan.
    """
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gemlab-mip-") as folder:
        request, answer_path = Path(folder, "request.npz"), Path(folder, "answer.npz")
        np.savez(
            request,
            costs=problem.costs,
            loads=problem.loads,
            capacity=problem.capacity,
            time_limit=np.array(float(time_limit)),
        )
        try:
            child = subprocess.run(
                [sys.executable, "-m", "gemlab.plan.exact", str(request), str(answer_path)],
                capture_output=True,
                timeout=time_limit + _DEADLINE_GRACE,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return _failed("killed at deadline", start)
        if child.returncode != 0 or not answer_path.exists():
            reason = child.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            return _failed(f"solver process failed (exit {child.returncode}: {reason[0]})", start)
        with np.load(answer_path, allow_pickle=False) as answer:
            found = bool(answer["has_solution"])
            solution = answer["assignment"].astype(np.int64) if found else None
            bound, gap = float(answer["bound"]), float(answer["gap"])
            status, infeasible = str(answer["status"]), bool(answer["infeasible"])
    value = problem.value(solution) if solution is not None else float("nan")
    return MIPResult(solution, value, bound, gap, status, time.perf_counter() - start, infeasible)


def solve_subproblem_in_process(
    costs: np.ndarray, loads: np.ndarray, capacity: np.ndarray, time_limit: float
) -> np.ndarray | None:
    """Best assignment of a small sub-problem (capacities may be 0), or None if it has none.

    Runs in this process: meant for the residual problems of the repair step
    (tens of tasks), where HiGHS finishes in milliseconds and a child process
    would cost more than the solve.
    """
    result = _solve(costs, loads, capacity, time_limit)
    return result["assignment"].astype(np.int64) if bool(result["has_solution"]) else None


def _failed(status: str, start: float) -> MIPResult:
    nan = float("nan")
    return MIPResult(None, nan, nan, nan, status, time.perf_counter() - start, False)


if __name__ == "__main__":
    with np.load(sys.argv[1], allow_pickle=False) as job:
        result = _solve(job["costs"], job["loads"], job["capacity"], float(job["time_limit"]))
    np.savez(sys.argv[2], **result)
