"""The compiler: hierarchical bit-scaling rounding of a fractional plan (precision p).

Round k = 1..p looks at bit k of every x_ij, ``floor(2^k x_ij) mod 2``: a pair
whose k-th binary digit is set is a candidate in round k. Candidates whose
task is still unplaced are taken in order of decreasing affinity (ties by task
index, then expert index, so the result is deterministic) and placed while the
expert has room. Large fractions have their high bits set and are therefore
considered early; small fractions only in late rounds.

Taken literally, the scheme misreads integral plans: x = 1 has no set bit
(``floor(2^k) mod 2 = 0`` for k >= 1), so every integral entry would skip all
p rounds. x is therefore read as ``min(x, 1 - 2^-p)`` -- the binary fraction
0.11...1 with all p bits set -- which makes round 1 place every integral entry
and keeps the rounding exact whenever the LP is already integral.

Tasks left after round p go to the best-affinity expert that still has room
(the *fallback*, recorded as round p + 1), heaviest first so that large tasks
are not squeezed out by small ones. A task that fits nowhere stays unplaced
(-1) for the repair step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gemlab.plan.errors import PlanInputError
from gemlab.plan.problem import LOAD_TOLERANCE, AssignmentProblem

MAX_PRECISION = 30  # 2^30 * x still fits comfortably in an int64 and a float's mantissa


@dataclass(frozen=True)
class Rounding:
    assignment: np.ndarray  # (N,) expert index, -1 where nothing had room
    placed_round: np.ndarray  # (N,) 1..p bit round, p + 1 fallback, 0 unplaced
    precision: int

    @property
    def fallback_count(self) -> int:
        return int(np.count_nonzero(self.placed_round == self.precision + 1))


def check_precision(precision: int) -> int:
    """Return ``precision`` if it is an integer in 1..30; raise PlanInputError otherwise."""
    if isinstance(precision, bool) or not isinstance(precision, int | np.integer):
        raise PlanInputError(f"precision: expected an integer in 1..{MAX_PRECISION}, got {precision!r}")
    if not 1 <= precision <= MAX_PRECISION:
        raise PlanInputError(f"precision: must be in 1..{MAX_PRECISION}, got {precision}")
    return int(precision)


def _has_room(residual: float, load: float, capacity: float) -> bool:
    return load <= residual + LOAD_TOLERANCE * max(1.0, capacity)


def bit_scaling_round(problem: AssignmentProblem, x: np.ndarray, precision: int) -> Rounding:
    """Round the fractional plan ``x`` (N, E) to an assignment that never exceeds capacity.

    Raises PlanInputError for a precision outside 1..30 or an ``x`` of the wrong shape.
    """
    precision = check_precision(precision)
    if x.shape != problem.costs.shape:
        raise PlanInputError(f"fractional plan: shape {x.shape} does not match costs {problem.costs.shape}")
    rows, cols = np.nonzero(x > 0)
    digits = np.minimum(x[rows, cols], 1.0 - 2.0**-precision)
    order = np.lexsort((cols, rows, -problem.costs[rows, cols]))
    rows, cols, digits = rows[order], cols[order], digits[order]

    loads, capacity = problem.loads, problem.capacity
    residual = capacity.copy()
    assignment = np.full(problem.num_tasks, -1, dtype=np.int64)
    placed_round = np.zeros(problem.num_tasks, dtype=np.int64)
    for k in range(1, precision + 1):
        bit_set = (np.floor(digits * 2.0**k).astype(np.int64) & 1).astype(bool)
        candidates = bit_set & (assignment[rows] < 0)
        for i, j in zip(rows[candidates].tolist(), cols[candidates].tolist(), strict=True):
            if assignment[i] < 0 and _has_room(residual[j], loads[i], capacity[j]):
                assignment[i] = j
                placed_round[i] = k
                residual[j] -= loads[i]

    fallback_round = precision + 1
    unplaced = np.flatnonzero(assignment < 0)
    for i in unplaced[np.lexsort((unplaced, -loads[unplaced]))].tolist():
        room = loads[i] <= residual + LOAD_TOLERANCE * np.maximum(1.0, capacity)
        if room.any():
            j = int(np.argmax(np.where(room, problem.costs[i], -np.inf)))
            assignment[i] = j
            placed_round[i] = fallback_round
            residual[j] -= loads[i]
    return Rounding(assignment, placed_round, precision)
