"""Routing a held-out domain (leave-one-domain-out) through a plan solved without it.

A held-out domain is never trained on, so it must not shape the plan: the
anchors are fitted and the assignment solved on the training domains alone.
It still needs an expert at evaluation time, because a planned router looks
every domain up in its table. It goes to the expert whose anchor its mean
stem feature is closest to (highest cosine affinity): the rule GEM's costs
already use, applied to one more row, with no capacity taken (it carries no
training load). Its stem features come from unlabelled images of its
calibration split; no label of the held-out domain is read.

    costs, heldout_costs = split_affinity(means, names, heldout=[2], num_experts=2, seed=0)
    plan = make_plan(AssignmentProblem.count(costs.costs, capacity, ...), "gem", options)
    plan = with_heldout_tasks(plan, {2: names[2]}, heldout_costs)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gemlab.plan.affinity import CostMatrix, affinity_from_features, cosine_affinity, expert_anchors
from gemlab.plan.errors import PlanInputError
from gemlab.plan.plan import Plan


def with_heldout_tasks(plan: Plan, positions: Mapping[int, str], affinities: np.ndarray) -> Plan:
    """``plan`` with held-out tasks inserted at ``positions`` (index in the full task order -> name).

    ``affinities`` (H, E) are the held-out tasks' costs, rows in increasing position order. Each goes
    to its argmax expert with load 0 (no capacity used), a one-hot fractional row, the fallback round
    (p + 1, placed outside the rounding), and the LP bound grows by its best cost -- the exact LP
    optimum of the extended problem, since a load-0 task takes its best expert freely. ``details``
    gains ``heldout``: name -> expert name. Raises PlanInputError for affinities of the wrong shape
    or positions that do not fit the plan.
    """
    order = sorted(positions)
    costs = np.asarray(affinities, dtype=np.float64)
    total = plan.num_tasks + len(order)
    if costs.shape != (len(order), plan.num_experts) or not all(0 <= p < total for p in order):
        raise PlanInputError(
            f"held-out tasks: {len(order)} positions {order} in {total} tasks, affinities {costs.shape} "
            f"for {plan.num_experts} experts"
        )
    chosen = costs.argmax(axis=1)
    kept = [i for i in range(total) if i not in positions]  # where the plan's own tasks land

    def merged(own: np.ndarray, new: np.ndarray) -> np.ndarray:
        out = np.zeros((total, *own.shape[1:]), dtype=own.dtype)
        out[kept], out[order] = own, new
        return out

    names = np.empty(total, dtype=object)
    names[kept], names[order] = list(plan.task_names), [positions[p] for p in order]
    fallback = (plan.precision or 0) + 1
    routed = {positions[p]: plan.expert_names[j] for p, j in zip(order, chosen.tolist(), strict=True)}
    return Plan(
        task_names=tuple(names.tolist()),
        expert_names=plan.expert_names,
        assignment=merged(plan.assignment, chosen),
        costs=merged(plan.costs, costs),
        loads=merged(plan.loads, np.zeros(len(order))),
        capacity=plan.capacity,
        capacity_mode=plan.capacity_mode,
        strategy=plan.strategy,
        precision=plan.precision,
        lp_bound=None if plan.lp_bound is None else plan.lp_bound + float(costs.max(axis=1).sum()),
        fractional=None if plan.fractional is None else merged(plan.fractional, np.eye(plan.num_experts)[chosen]),
        placed_round=None if plan.placed_round is None else merged(plan.placed_round, np.full(len(order), fallback)),
        details={**plan.details, "heldout": routed},
        timings=plan.timings,
    )


def split_affinity(
    means: np.ndarray,
    task_names: Sequence[str],
    heldout: Sequence[int],
    num_experts: int,
    seed: int,
    anchor_pool: np.ndarray | None = None,
) -> tuple[CostMatrix, np.ndarray]:
    """GEM costs of the training tasks, and the (H, E) affinities of the ``heldout`` rows to the same anchors.

    Anchors are fitted on ``anchor_pool`` (which must hold no held-out sample), else on the training
    rows of ``means``: with no held-out row this is exactly :func:`affinity_from_features`. Raises
    PlanInputError as :func:`affinity_from_features` does.
    """
    means = np.asarray(means, dtype=np.float64)
    train = [t for t in range(len(task_names)) if t not in heldout]
    pool = means[train] if anchor_pool is None else anchor_pool
    costs = affinity_from_features(means[train], [task_names[t] for t in train], num_experts, seed, anchor_pool=pool)
    if not heldout:
        return costs, np.zeros((0, num_experts))
    return costs, cosine_affinity(means[sorted(heldout)], expert_anchors(pool, num_experts, seed))  # same anchors
