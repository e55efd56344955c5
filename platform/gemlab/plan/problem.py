"""The assignment problem the planner solves, validated once at construction.

Both capacity modes share one representation: every task has a load ``w_i``
and every expert a capacity ``C_j``, and a plan must satisfy
``sum_i w_i x_ij <= C_j``. *Count* mode is the special case ``w_i = 1`` with
integer capacities ("at most c datasets per expert"); *load* mode is the
generalized assignment problem (loads are dataset sizes or sampling masses).
Keeping one representation means the LP, the compiler and the repair step
have a single code path; ``mode`` only records which guarantees apply (the
count-mode LP is totally unimodular, see docs/planner.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from gemlab.plan.affinity import CostMatrix
from gemlab.plan.errors import InfeasiblePlanError, PlanInputError

CapacityMode = Literal["count", "load"]

# Slack for comparing sums of float loads with capacities: loads that fit
# exactly must not be rejected because of rounding in the running sums.
LOAD_TOLERANCE = 1e-9


def read_only(array, dtype=np.float64) -> np.ndarray:
    """A private read-only copy: problems and plans are immutable, so callers cannot alter them in place."""
    array = np.array(array, dtype=dtype, copy=True)
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class AssignmentProblem:
    """Assign each of N tasks to one of E experts, maximising total affinity.

    Build it with :meth:`count` or :meth:`load`; both validate every input and
    raise :class:`PlanInputError` (malformed) or :class:`InfeasiblePlanError`
    (well-formed but provably without an integral plan) before any solver runs.
    """

    costs: np.ndarray  # (N, E) affinity c_ij, maximised
    loads: np.ndarray  # (N,) w_i; all ones in count mode
    capacity: np.ndarray  # (E,) C_j
    task_names: tuple[str, ...]
    expert_names: tuple[str, ...]
    mode: CapacityMode

    @property
    def num_tasks(self) -> int:
        return self.costs.shape[0]

    @property
    def num_experts(self) -> int:
        return self.costs.shape[1]

    @classmethod
    def count(
        cls,
        costs: np.ndarray,
        capacity: int | Sequence[int] | np.ndarray,
        task_names: Sequence[str] | None = None,
        expert_names: Sequence[str] | None = None,
    ) -> AssignmentProblem:
        """At most ``capacity[j]`` tasks on expert j (a scalar applies to all).

        Raises PlanInputError for malformed costs, names or capacities, and
        InfeasiblePlanError when the experts cannot hold all tasks.
        """
        costs, tasks, experts = cls._common(costs, task_names, expert_names)
        cap = cls._capacity(capacity, len(experts), experts, "capacity")
        if np.any(cap != np.floor(cap)):
            raise PlanInputError(f"capacity: count capacities must be integers, got {cap.tolist()}")
        if cap.sum() < len(tasks):
            raise InfeasiblePlanError(
                f"capacity: total capacity {int(cap.sum())} is smaller than the {len(tasks)} tasks",
                tasks,
            )
        return cls(read_only(costs), read_only(np.ones(len(tasks))), read_only(cap), tasks, experts, "count")

    @classmethod
    def load(
        cls,
        costs: np.ndarray,
        loads: Sequence[float] | np.ndarray,
        capacity: float | Sequence[float] | np.ndarray,
        task_names: Sequence[str] | None = None,
        expert_names: Sequence[str] | None = None,
    ) -> AssignmentProblem:
        """Sum of task loads on expert j at most ``capacity[j]`` (generalized assignment).

        Raises PlanInputError for malformed input (negative or non-finite
        loads, capacity <= 0, ...) and InfeasiblePlanError when a task is
        heavier than every expert or the loads exceed the total capacity.
        """
        costs, tasks, experts = cls._common(costs, task_names, expert_names)
        loads = np.asarray(loads, dtype=np.float64)
        if loads.shape != (len(tasks),):
            raise PlanInputError(f"loads: expected {len(tasks)} values (one per task), got shape {loads.shape}")
        bad = np.flatnonzero(~np.isfinite(loads) | (loads < 0))
        if len(bad):
            raise PlanInputError(f"loads: must be finite and >= 0; task {tasks[bad[0]]!r} has load {loads[bad[0]]}")
        cap = cls._capacity(capacity, len(experts), experts, "load capacity")
        too_heavy = np.flatnonzero(loads > cap.max() * (1 + LOAD_TOLERANCE))
        if len(too_heavy):
            names = tuple(tasks[i] for i in too_heavy)
            detail = ", ".join(f"{tasks[i]!r} (load {loads[i]:g})" for i in too_heavy)
            raise InfeasiblePlanError(
                f"no integral plan exists: {detail} exceed the largest expert capacity {cap.max():g}; "
                "the LP relaxation would only hide this by splitting the task across experts",
                names,
            )
        if loads.sum() > cap.sum() * (1 + LOAD_TOLERANCE):
            raise InfeasiblePlanError(
                f"load capacity: total load {loads.sum():g} exceeds total capacity {cap.sum():g}",
                tasks,
            )
        return cls(read_only(costs), read_only(loads), read_only(cap), tasks, experts, "load")

    @staticmethod
    def _common(costs, task_names, expert_names):
        """Costs and names validated by :class:`CostMatrix` (names default to task0.., expert0..)."""
        costs = np.asarray(costs, dtype=np.float64)
        if costs.ndim != 2:
            raise PlanInputError(f"costs: expected a (tasks, experts) matrix, got shape {costs.shape}")
        n, e = costs.shape
        matrix = CostMatrix(
            costs,
            tuple(f"task{i}" for i in range(n)) if task_names is None else task_names,
            tuple(f"expert{j}" for j in range(e)) if expert_names is None else expert_names,
        )
        return matrix.costs, matrix.task_names, matrix.expert_names

    @staticmethod
    def _capacity(capacity, num_experts: int, experts: tuple[str, ...], field: str) -> np.ndarray:
        cap = np.asarray(capacity, dtype=np.float64)
        if cap.ndim == 0:
            cap = np.full(num_experts, float(cap))
        if cap.shape != (num_experts,):
            raise PlanInputError(f"{field}: expected a scalar or {num_experts} values, got shape {cap.shape}")
        bad = np.flatnonzero(~np.isfinite(cap) | (cap <= 0))
        if len(bad):
            raise PlanInputError(f"{field}: must be finite and > 0; expert {experts[bad[0]]!r} has {cap[bad[0]]}")
        return cap

    def expert_load(self, assignment: np.ndarray) -> np.ndarray:
        """Total task load placed on each expert (unassigned tasks, -1, count for none)."""
        placed = assignment >= 0
        return np.bincount(assignment[placed], weights=self.loads[placed], minlength=self.num_experts)

    def value(self, assignment: np.ndarray) -> float:
        """Total affinity of an assignment (unassigned tasks contribute nothing)."""
        placed = np.flatnonzero(assignment >= 0)
        return float(self.costs[placed, assignment[placed]].sum())

    def overload(self, assignment: np.ndarray) -> np.ndarray:
        """Per-expert load above capacity (0 where within capacity)."""
        excess = self.expert_load(assignment) - self.capacity
        excess[excess <= LOAD_TOLERANCE * np.maximum(1.0, self.capacity)] = 0.0
        return excess
