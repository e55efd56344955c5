"""The protocol every evaluator follows."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Evaluator(Protocol):
    """Metrics of one split, fed one batch at a time.

    ``reset`` forgets everything processed; ``process`` takes one batch (its
    arguments depend on the task: labels and logits, or image ids and
    detections); ``evaluate`` returns the metrics of everything processed
    since the last ``reset``, and may be called more than once.
    """

    def reset(self) -> None: ...

    def process(self, *args: Any, **kwargs: Any) -> None: ...

    def evaluate(self) -> dict[str, float]: ...
