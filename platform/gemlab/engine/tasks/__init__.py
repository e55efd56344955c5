"""What the worker and the loop need to know about a task, and nothing else.

The engine trains classifiers and detectors with one worker and one loop:
everything that differs -- how images are decoded and batched, the loss,
how a domain is scored -- sits behind :class:`Task`. A run's task is the
task of its domains, or the self-supervised objective the config names
(:func:`task_of`), and its model must be built for it.

    task = task_of(mixture, cfg.objective)   # the data's task, or a self-supervised objective on it
    data = task.data(mixture, image_size)
    loss, stats = task.loss(model, data.batch(pairs))
    results = task.evaluate(model, data, domains, "val", batch_size)   # domain id -> {metric: value, ...}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from gemlab.data.mixture import DomainMixture
from gemlab.engine.config import ConfigError


class TaskData(Protocol):
    """A run's images, decoded once per worker, and its batches."""

    def batch(self, pairs: Sequence[tuple[int, int]], split: str = "train") -> dict[str, Any]:
        """The batch of ``(domain id, index)`` pairs, as the mixture sampler draws them."""

    def calibration(self, domain: int, split: str, count: int, seed: int) -> tuple[torch.Tensor, list[list[int]]]:
        """Up to ``count`` images of a split (a seeded choice) and each one's global classes, for the plan."""


class Task(Protocol):
    """One kind of supervision: its data, loss and evaluation.

    ``metric`` is the per-domain score that progress lines, Tune and the
    report rank runs by (``accuracy``, ``ap``).
    """

    name: str
    metric: str

    def data(self, mixture: DomainMixture, image_size: int) -> TaskData: ...

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The batch's training loss (task + routers' auxiliary losses) and its named parts as floats."""

    def evaluate(
        self, model: nn.Module, data: TaskData, domains: Iterable[int], split: str, batch_size: int
    ) -> dict[int, dict[str, Any]]:
        """Domain id -> its metrics on ``split`` (``metric`` among them) and ``expert_load``."""

    def previews(self, model: nn.Module, data: TaskData, domains: Iterable[int], split: str) -> dict[int, Any]:
        """Domain id -> an image (uint8 (3, H, W)) showing the model's output on the split's first image, or {}."""


SUPERVISED = "supervised"  # the objective that trains the data's own task (``objective.name``'s default)


def task_of(mixture: DomainMixture, objective: Mapping[str, Any] | None = None) -> Task:
    """The run's task: the task of the mixture's domains, or a self-supervised objective on them.

    ``objective`` is the config's ``objective`` group (None or ``name: supervised``: the data's own task;
    ``name: star``: STAR's self-supervised objective on classification data, built from the group's keys).
    Raises ConfigError when the domains mix tasks, the objective is unknown or does not fit the data,
    or an objective key is bad (naming it).
    """
    from gemlab.engine.tasks.classification import CLASSIFICATION
    from gemlab.engine.tasks.detection import DETECTION

    tasks = {domain.task for domain in mixture.domains}
    if len(tasks) > 1:
        by_task = {t: [d.name for d in mixture.domains if d.task == t] for t in sorted(tasks)}
        raise ConfigError(f"data.domains: a run trains one task, these domains mix them: {by_task}")
    task = {CLASSIFICATION.name: CLASSIFICATION, DETECTION.name: DETECTION}[tasks.pop()]
    name = SUPERVISED if objective is None else objective["name"]
    if name == SUPERVISED:
        return task
    if name != "star":
        raise ConfigError(f"objective={name}: unknown; choose supervised or star (experiments/objective/)")
    if task is not CLASSIFICATION:
        raise ConfigError(f"objective=star learns from classification images, but data.domains are {task.name}")
    from gemlab.engine.tasks.star import STARTask

    return STARTask(objective)


def expert_share(routings: Iterable[Any]) -> torch.Tensor | None:
    """Tokens each expert received, summed over a forward's MoE layers (None: the model has none)."""
    counts = [routing.counts.detach().double() for routing in routings]
    return sum(counts) if counts else None


def load_shares(load: torch.Tensor | None) -> list[float]:
    """A domain's routing heatmap row: the share of its routed tokens each expert got ([] without MoE layers)."""
    return (load / load.sum()).tolist() if load is not None and load.sum() > 0 else []
