"""Errors raised by the planner.

Both derive from ``ValueError`` so that callers who only care about "the
planner refused these inputs" can catch one type, while the CLI can still tell
malformed input (fix the file) from a well-formed but unsatisfiable problem
(change the capacities).
"""

from gemlab.errors import GemlabError


class PlanError(GemlabError, ValueError):
    """Base class of every error the planner raises on purpose."""


class PlanInputError(PlanError):
    """The inputs are malformed: NaN costs, mismatched shapes, duplicate names, ..."""


class InfeasiblePlanError(PlanError):
    """No integral plan satisfies the capacities.

    ``tasks`` names the tasks that could not be placed (or whose load alone
    exceeds every expert), so the message can say which datasets are the
    problem rather than only that there is one.
    """

    def __init__(self, message: str, tasks: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.tasks = tuple(tasks)
