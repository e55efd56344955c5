"""DQRoute (seed 004): three expert classifiers on the pooled features, fused by their OOD confidences.

The paper's experts are classification heads on a shared feature extractor,
so this router routes between *classifiers*, not between the FFN experts of
MoE layers: its spec declares a ``head``, which replaces the model's linear
classifier (:class:`gemlab.models.dqroute.DQRouteHead`), and the model's
trunk is dense. The head carries the whole objective (Eq. 9) as its
routing's auxiliary losses, because only it sees every expert's logits; the
model's task loss is therefore :class:`HeadObjective`, zero.

The class groups follow Sec. 3.2: the general expert takes every class, the
medium expert the classes with fewer than ``τ_m`` training images, the tail
expert those with fewer than ``τ_t < τ_m``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gemlab.models.dqroute import DQRouteHead
from gemlab.moe.spec import RouterSpec, RunFacts

EXPERTS = 3  # general, medium, tail


def class_groups(counts: Sequence[int], medium_threshold: int, tail_threshold: int) -> list[list[int]]:
    """[all classes, classes with fewer than ``medium_threshold`` images, fewer than ``tail_threshold``] (Sec. 3.2).

    A group may be empty (a balanced mixture has no medium or tail class); its expert then learns
    from its confidence head only that no sample is its own, and fades out of the fusion.
    Raises ValueError unless 1 <= tail_threshold <= medium_threshold.
    """
    if not 1 <= tail_threshold <= medium_threshold:
        raise ValueError(
            f"tail_threshold={tail_threshold}, medium_threshold={medium_threshold}: "
            "need 1 <= tail_threshold <= medium_threshold"
        )
    classes = range(len(counts))
    return [
        list(classes),
        [c for c in classes if counts[c] < medium_threshold],
        [c for c in classes if counts[c] < tail_threshold],
    ]


class HeadObjective(nn.Module):
    """The task loss beside a DQRoute head: zero, since the head's routing carries L_cls and λ_OOD L_OOD."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits.new_zeros(())


def epoch_in_steps(facts: RunFacts, epoch_steps: int | None) -> int:
    """The steps of the paper's epoch (Eq. 2's t): ``epoch_steps``, or ceil(training images / batch size).

    The default is the steps in which each worker sees as many samples as the mixture's training
    split holds: one epoch on one worker. Raises ValueError when neither is known.
    """
    if epoch_steps is not None:
        return epoch_steps
    if not facts.batch_size:
        raise ValueError("epoch_steps: the run's batch size is not known; set router.epoch_steps")
    return max(1, math.ceil(sum(facts.class_counts) / facts.batch_size))


def dqroute_head(
    dim: int,
    facts: RunFacts,
    medium_threshold: int,
    tail_threshold: int,
    epoch_steps: int | None = None,
    **options: float | str | None,
) -> DQRouteHead:
    """The head with its class groups cut from the run's class counts at the two thresholds.

    Raises ValueError for ``moe.num_experts`` other than 3, and as :func:`class_groups`,
    :func:`epoch_in_steps` and :class:`DQRouteHead` do.
    """
    if facts.num_experts != EXPERTS:
        raise ValueError(f"moe.num_experts={facts.num_experts}: DQRoute has {EXPERTS} experts (general, medium, tail)")
    groups = class_groups(facts.class_counts, medium_threshold, tail_threshold)
    return DQRouteHead(dim, groups, facts.class_counts, epoch_steps=epoch_in_steps(facts, epoch_steps), **options)


SPEC = RouterSpec(
    name="confidence",
    head=dqroute_head,
    criterion=lambda facts: HeadObjective(),
)
