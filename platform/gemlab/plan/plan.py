"""The immutable ``Plan``: which expert every task goes to, and the evidence for it.

A plan is the contract between the planner and training: workers receive it
once (through Ray's object store) and never re-plan. It therefore carries
everything needed to audit it -- costs, capacities, the fractional LP plan,
the LP bound, the round in which each task was placed -- and serialises to
canonical JSON (sorted keys, shortest round-trip floats) so that the same
inputs give a byte-identical file. Solver timings are kept on the object for
reports but left out of the JSON, because they would break that identity.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gemlab.files import write_text_atomically
from gemlab.plan.errors import PlanInputError
from gemlab.plan.problem import AssignmentProblem, CapacityMode, read_only
from gemlab.plan.rounding import Rounding, bit_scaling_round

SCHEMA_VERSION = 1
_EXPLAIN_MAX_TASKS = 40  # the per-task table is printed only for plans this small
_EXPLAIN_NAMES_PER_EXPERT = 6


@dataclass(frozen=True, eq=False)
class Plan:
    """A task -> expert map with its costs, capacities and provenance."""

    task_names: tuple[str, ...]
    expert_names: tuple[str, ...]
    assignment: np.ndarray  # (N,) expert index per task
    costs: np.ndarray  # (N, E) affinities the plan maximised
    loads: np.ndarray  # (N,) task loads (ones in count mode)
    capacity: np.ndarray  # (E,)
    capacity_mode: CapacityMode
    strategy: str
    precision: int | None = None  # rounding precision p (gem only)
    lp_bound: float | None = None  # LP relaxation optimum: no integral plan is worth more
    fractional: np.ndarray | None = None  # (N, E) the LP plan the compiler rounded
    placed_round: np.ndarray | None = None  # (N,) 1..p bit round, p + 1 fallback
    details: Mapping[str, Any] = field(default_factory=dict)  # strategy-specific facts
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds; not serialised

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "assignment", read_only(self.assignment, np.int64))
        set_(self, "costs", read_only(self.costs, np.float64))
        set_(self, "loads", read_only(self.loads, np.float64))
        set_(self, "capacity", read_only(self.capacity, np.float64))
        if self.fractional is not None:
            set_(self, "fractional", read_only(self.fractional, np.float64))
        if self.placed_round is not None:
            set_(self, "placed_round", read_only(self.placed_round, np.int64))
        n, e = self.costs.shape
        if self.assignment.shape != (n,) or len(self.task_names) != n or len(self.expert_names) != e:
            raise PlanInputError(
                f"plan: {len(self.task_names)} tasks, {len(self.expert_names)} experts, "
                f"assignment {self.assignment.shape} do not match costs {self.costs.shape}"
            )
        if n and (self.assignment.min() < 0 or self.assignment.max() >= e):
            raise PlanInputError("plan: every task must be assigned to an expert index in range")

    # ----------------------------------------------------------------- derived
    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def num_experts(self) -> int:
        return len(self.expert_names)

    @property
    def problem(self) -> AssignmentProblem:
        """The problem this plan answers (re-validated), e.g. for re-planning."""
        if self.capacity_mode == "count":
            return AssignmentProblem.count(self.costs, self.capacity, self.task_names, self.expert_names)
        return AssignmentProblem.load(self.costs, self.loads, self.capacity, self.task_names, self.expert_names)

    @property
    def value(self) -> float:
        return float(self.costs[np.arange(self.num_tasks), self.assignment].sum())

    @property
    def ratio(self) -> float | None:
        """value / LP bound: 1.0 means provably optimal (None without a bound)."""
        if self.lp_bound is None or self.lp_bound == 0:
            return None
        return self.value / self.lp_bound

    @property
    def expert_load(self) -> np.ndarray:
        return np.bincount(self.assignment, weights=self.loads, minlength=self.num_experts)

    @property
    def violations(self) -> dict[str, float]:
        """Expert name -> load above its capacity, for every overloaded expert."""
        excess = self.expert_load - self.capacity
        tolerance = 1e-9 * np.maximum(1.0, self.capacity)
        return {self.expert_names[j]: float(excess[j]) for j in np.flatnonzero(excess > tolerance)}

    @property
    def mapping(self) -> dict[str, str]:
        """Task name -> expert name."""
        return {t: self.expert_names[j] for t, j in zip(self.task_names, self.assignment.tolist(), strict=True)}

    @property
    def split_tasks(self) -> tuple[int, ...]:
        """Tasks the LP plan spread over several experts (no x_ij = 1): none without one, none in count mode."""
        if self.fractional is None:
            return ()
        return tuple(np.flatnonzero((self.fractional == 1.0).sum(axis=1) == 0).tolist())

    def compiled(self) -> Rounding | None:
        """What the compiler made of the LP plan before any repair: bit-scaling rounding at ``precision``.

        ``placed_round`` marks a task the repair moved (p + 2) but not where the compiler had put it.
        The rounding is a pure function of costs, loads, capacities, the LP plan and p, which the plan
        keeps, so it is recomputed here rather than stored twice. Loads are taken as they are (count
        mode's ones, a held-out task's 0), so the rounding sees the problem it saw. None for a plan
        without an LP plan or a precision (strategies other than gem). Raises PlanError only for a plan
        whose loads no capacities could hold (an edited file: the planner never writes one).
        """
        if self.fractional is None or self.precision is None:
            return None
        problem = AssignmentProblem.load(self.costs, self.loads, self.capacity, self.task_names, self.expert_names)
        return bit_scaling_round(problem, self.fractional, self.precision)

    def tasks_of(self, expert: int | str) -> tuple[str, ...]:
        """Names of the tasks routed to ``expert`` (index or name); raises KeyError for an unknown name."""
        if isinstance(expert, str):
            if expert not in self.expert_names:
                raise KeyError(f"no expert {expert!r} in this plan (experts: {list(self.expert_names)})")
            j = self.expert_names.index(expert)
        else:
            j = operator.index(expert)  # any integer type, numpy's included
        return tuple(self.task_names[i] for i in np.flatnonzero(self.assignment == j))

    # ----------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON-ready form (no timings)."""
        fractional = None
        if self.fractional is not None:
            rows, cols = np.nonzero(self.fractional)
            fractional = {
                "rows": rows.tolist(),
                "cols": cols.tolist(),
                "values": self.fractional[rows, cols].tolist(),
            }
        return {
            "schema_version": SCHEMA_VERSION,
            "strategy": self.strategy,
            "capacity_mode": self.capacity_mode,
            "precision": self.precision,
            "task_names": list(self.task_names),
            "expert_names": list(self.expert_names),
            "assignment": self.assignment.tolist(),
            "costs": self.costs.tolist(),
            "loads": self.loads.tolist(),
            "capacity": self.capacity.tolist(),
            "lp_bound": self.lp_bound,
            "value": self.value,
            "fractional": fractional,
            "placed_round": None if self.placed_round is None else self.placed_round.tolist(),
            "details": dict(self.details),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "plan") -> Plan:
        """Rebuild a plan; raises PlanInputError naming ``source`` and the missing or bad field."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise PlanInputError(f"{source}: schema_version {version!r} is not the supported {SCHEMA_VERSION}")
        required = (
            "strategy",
            "capacity_mode",
            "task_names",
            "expert_names",
            "assignment",
            "costs",
            "loads",
            "capacity",
        )
        missing = [key for key in required if key not in data]
        if missing:
            raise PlanInputError(f"{source}: missing field(s) {missing}")
        costs = np.asarray(data["costs"], dtype=np.float64)
        fractional = None
        if data.get("fractional") is not None:
            sparse = data["fractional"]
            fractional = np.zeros(costs.shape)
            fractional[sparse["rows"], sparse["cols"]] = sparse["values"]
        try:
            return cls(
                task_names=tuple(data["task_names"]),
                expert_names=tuple(data["expert_names"]),
                assignment=np.asarray(data["assignment"], dtype=np.int64),
                costs=costs,
                loads=data["loads"],
                capacity=data["capacity"],
                capacity_mode=data["capacity_mode"],
                strategy=data["strategy"],
                precision=data.get("precision"),
                lp_bound=data.get("lp_bound"),
                fractional=fractional,
                placed_round=data.get("placed_round"),
                details=data.get("details") or {},
            )
        except PlanInputError as error:
            raise PlanInputError(f"{source}: {error}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "plan") -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise PlanInputError(f"{source}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise PlanInputError(f"{source}: expected a JSON object")
        return cls.from_dict(data, source)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the canonical JSON atomically (temp file + rename): no half-written plan on error."""
        path = Path(path)
        write_text_atomically(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        """Read a plan file; raises PlanInputError naming the file when it is not a valid plan."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise PlanInputError(f"{path}: cannot read plan ({error.strerror})") from None
        return cls.from_json(text, source=str(path))

    def to_arrow(self):
        """One row per task (name, expert, cost, load, round, cost row); plan fields in schema metadata."""
        import pyarrow as pa

        n, e = self.costs.shape
        columns = {
            "task": pa.array(self.task_names, pa.string()),
            "expert": pa.array([self.expert_names[j] for j in self.assignment.tolist()], pa.string()),
            "expert_index": pa.array(self.assignment, pa.int32()),
            "cost": pa.array(self.costs[np.arange(n), self.assignment]),
            "load": pa.array(self.loads),
            "placed_round": pa.nulls(n, pa.int32())
            if self.placed_round is None
            else pa.array(self.placed_round, pa.int32()),
            "costs": pa.FixedSizeListArray.from_arrays(pa.array(self.costs.ravel()), e),
        }
        if self.fractional is not None:
            columns["fractional"] = pa.FixedSizeListArray.from_arrays(pa.array(self.fractional.ravel()), e)
        meta = {k: v for k, v in self.to_dict().items() if k in _ARROW_METADATA_FIELDS}
        return pa.table(columns).replace_schema_metadata({"gemlab.plan": json.dumps(meta, sort_keys=True)})

    @classmethod
    def from_arrow(cls, table, source: str = "plan table") -> Plan:
        """Inverse of :meth:`to_arrow`; raises PlanInputError when the table is not a plan."""
        metadata = (table.schema.metadata or {}).get(b"gemlab.plan")
        if metadata is None:
            raise PlanInputError(f"{source}: no 'gemlab.plan' schema metadata")
        data = json.loads(metadata)
        e = len(data["expert_names"])
        data["task_names"] = table.column("task").to_pylist()
        data["assignment"] = table.column("expert_index").to_pylist()
        data["loads"] = table.column("load").to_pylist()
        data["costs"] = np.asarray(table.column("costs").combine_chunks().flatten()).reshape(-1, e)
        rounds = table.column("placed_round")
        data["placed_round"] = None if rounds.null_count == len(table) else rounds.to_pylist()
        if "fractional" in table.column_names:
            dense = np.asarray(table.column("fractional").combine_chunks().flatten()).reshape(-1, e)
            rows, cols = np.nonzero(dense)
            data["fractional"] = {"rows": rows, "cols": cols, "values": dense[rows, cols]}
        return cls.from_dict(data, source)

    # ------------------------------------------------------------------ report
    def explain(self) -> str:
        """A readable summary: headline numbers, one line per expert, and (small plans) per task."""
        lines = [f"strategy {self.strategy}" + (f", precision p={self.precision}" if self.precision else "")]
        lines.append(
            f"value {self.value:.6g}"
            + (f", LP bound {self.lp_bound:.6g}, value/LP {self.ratio:.6f}" if self.ratio is not None else "")
        )
        violations = self.violations
        lines.append(
            "capacity violations: "
            + (", ".join(f"{k} +{v:g}" for k, v in violations.items()) if violations else "none")
        )
        for key, value in sorted(self.details.items()):
            lines.append(f"{key}: {value}")
        width = max(len(name) for name in self.expert_names)
        lines.append("")
        lines.append(f"{'expert':<{width}}  {'load':>10}  {'capacity':>10}  tasks")
        loads = self.expert_load
        for j, name in enumerate(self.expert_names):
            tasks = self.tasks_of(j)
            shown = ", ".join(tasks[:_EXPLAIN_NAMES_PER_EXPERT])
            if len(tasks) > _EXPLAIN_NAMES_PER_EXPERT:
                shown += f", ... (+{len(tasks) - _EXPLAIN_NAMES_PER_EXPERT} more)"
            flag = "  OVER" if name in violations else ""
            lines.append(f"{name:<{width}}  {loads[j]:>10g}  {self.capacity[j]:>10g}  {shown or '-'}{flag}")
        if self.num_tasks <= _EXPLAIN_MAX_TASKS:
            lines.extend(self._task_table())
        lines.extend(self._compiler_table())
        return "\n".join(lines)

    def _stage(self, placed_round: int) -> str:
        """A round of the compiler in words: 1..p, the fallback (p + 1), the repair (p + 2), or unplaced (0)."""
        p = self.precision or 0
        return {0: "unplaced", p + 1: "fallback", p + 2: "repaired"}.get(placed_round, f"round {placed_round}")

    def _task_table(self) -> list[str]:
        width = max(len(name) for name in self.task_names)
        lines = ["", f"{'task':<{width}}  {'expert':<10}  {'affinity':>8}  {'best':<10}  round"]
        best = np.argmax(self.costs, axis=1)
        for i, name in enumerate(self.task_names):
            j = self.assignment[i]
            stage = "-" if self.placed_round is None else self._stage(self.placed_round[i])
            lines.append(
                f"{name:<{width}}  {self.expert_names[j]:<10}  {self.costs[i, j]:>8.4f}  "
                f"{self.expert_names[best[i]]:<10}  {stage}"
            )
        return lines

    def _compiler_table(self) -> list[str]:
        """Each task the LP split, round 1 left or the repair moved: its LP plan, the compiler's choice, the plan's.

        Empty without a split: an integral LP is placed whole in round 1, and the repair has nothing to do.
        """
        split = self.split_tasks
        compiled = self.compiled() if split else None
        if compiled is None:
            return []
        noted = [i for i in range(self.num_tasks) if i in split or compiled.placed_round[i] != 1]
        noted += [i for i in np.flatnonzero(compiled.assignment != self.assignment).tolist() if i not in noted]
        rows = [("task", "LP plan (expert x_ij)", "compiled", "plan")]
        for i in sorted(noted)[:_EXPLAIN_MAX_TASKS]:
            row, j = self.fractional[i], compiled.assignment[i]
            shares = ", ".join(f"{self.expert_names[k]} {row[k]:.3f}" for k in np.flatnonzero(row))
            where = "unplaced" if j < 0 else f"{self.expert_names[j]} ({self._stage(compiled.placed_round[i])})"
            rows.append((self.task_names[i], shares, where, self.expert_names[self.assignment[i]]))
        widths = [max(len(row[c]) for row in rows) for c in range(3)]
        lines = [
            "",
            f"LP split {len(split)} of {self.num_tasks} tasks; compiler at p={self.precision} "
            "(tasks split, left by round 1, or moved by the repair):",
        ]
        lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
        if len(noted) > _EXPLAIN_MAX_TASKS:
            lines.append(f"... (+{len(noted) - _EXPLAIN_MAX_TASKS} more)")
        return lines


_ARROW_METADATA_FIELDS = (
    "schema_version",
    "strategy",
    "capacity_mode",
    "precision",
    "expert_names",
    "capacity",
    "lp_bound",
    "details",
)
