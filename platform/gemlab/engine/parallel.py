"""Who trains what: a worker's role, and the gradient all-reduces that keep the run one model.

Expert-parallel (a router with a fixed domain -> expert table: gem, random).
Expert j carries the mixture mass m_j = sum of p_d over its domains. The
placement puts experts on workers (several per worker, or a replica group
per expert when there are fewer experts than workers). Worker w samples only
its experts' domains, at their mixture weights, and scales its loss by its
mass ``m_w = sum over its experts j of m_j / |group_j|``. Then

    sum_w m_w * loss_w  has expectation  sum_d p_d * loss_d,

the mixture objective of one process. Summing the scaled shared gradients
over all workers and each expert's over its replica group gives exactly that
objective's gradient: no all-to-all, and no expert tensor crosses the network
unless the expert is replicated.

Data-parallel (every token-routed router): each worker samples the whole
mixture with its own stream, mass 1/W, every parameter summed over all.

Running statistics (BatchNorm's buffers) are no gradients: before every
evaluation they are replaced by their mass-weighted mean over the world, so
all ranks evaluate, and rank 0 checkpoints, the same trunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gemlab.moe.experts import ExpertBank
from gemlab.plan.placement import place_experts


@dataclass(frozen=True)
class WorkerRole:
    rank: int
    world_size: int
    local_experts: tuple[int, ...] | None  # None: every expert (data-parallel)
    train_domains: tuple[int, ...]  # domains this worker samples; empty: it only joins the all-reduces
    mass: float  # the weight of this worker's mean loss in the mixture objective
    eval_domains: tuple[int, ...]  # domains this worker evaluates (each domain on exactly one worker)
    expert_groups: tuple[tuple[int, ...], ...]  # expert j -> ranks holding it (all ranks when data-parallel)

    @property
    def expert_parallel(self) -> bool:
        return self.local_experts is not None


def expert_masses(table: Sequence[int], weights: Sequence[float], num_experts: int) -> np.ndarray:
    """m_j: the mixture weight of the domains routed to each expert."""
    return np.bincount(np.asarray(table), weights=np.asarray(weights, dtype=np.float64), minlength=num_experts)


def expert_parallel_role(
    table: Sequence[int],
    weights: Sequence[float],
    num_experts: int,
    rank: int,
    world_size: int,
    untrained: Sequence[int] = (),
) -> WorkerRole:
    """This rank's experts, domains and mass; a pure function of (plan, rank, world size) for elastic restarts.

    ``untrained`` domains (weight 0: held out, or not replayed) are evaluated by their expert's first worker
    but trained by none.
    """
    masses = expert_masses(table, weights, num_experts)
    placement = place_experts(masses, world_size)
    experts = placement.worker_experts[rank]
    groups = placement.expert_workers
    domains = tuple(d for d, j in enumerate(table) if j in experts and d not in untrained)
    mass = float(sum(masses[j] / len(groups[j]) for j in experts))
    evaluated = tuple(d for d, j in enumerate(table) if groups[j][0] == rank)
    return WorkerRole(rank, world_size, tuple(experts), domains, mass, evaluated, groups)


def data_parallel_role(
    num_domains: int, num_experts: int, rank: int, world_size: int, untrained: Sequence[int] = ()
) -> WorkerRole:
    """Every rank trains every domain but the ``untrained`` ones, and evaluates every world_size-th domain."""
    everyone = tuple(range(world_size))
    evaluated = tuple(d for d in range(num_domains) if d % world_size == rank)
    trained = tuple(d for d in range(num_domains) if d not in untrained)
    return WorkerRole(rank, world_size, None, trained, 1.0 / world_size, evaluated, (everyone,) * num_experts)


def expert_parameters(model: nn.Module) -> dict[int, list[tuple[str, nn.Parameter]]]:
    """Expert id -> its (name, parameter) pairs across every expert bank of ``model`` (MoE layers, GEMGR heads)."""
    owned: dict[int, list[tuple[str, nn.Parameter]]] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, ExpertBank):
            for key, member in module.members.items():
                prefix = f"{module_name}.members.{key}." if module_name else f"members.{key}."
                owned.setdefault(int(key), []).extend((prefix + n, p) for n, p in member.named_parameters())
    return owned


def shared_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every (name, parameter) that belongs to no expert: the trunk, routers, heads."""
    expert_ids = {id(p) for pairs in expert_parameters(model).values() for _, p in pairs}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in expert_ids]


def shared_buffers(model: nn.Module) -> list[torch.Tensor]:
    """Every floating-point buffer outside the expert banks (BatchNorm's running statistics, say)."""
    expert_owned = {id(b) for m in model.modules() if isinstance(m, ExpertBank) for b in m.buffers()}
    return [b for b in model.buffers() if b.is_floating_point() and id(b) not in expert_owned]


class GradientSync:
    """Sums the mass-scaled gradients: shared ones over the world, expert ones over each replica group.

    Each bucket is flattened into one tensor, so a step makes one all-reduce
    per group, not one per parameter. Subgroups are created in expert order
    on every rank, as ``torch.distributed.new_group`` requires.
    """

    def __init__(self, model: nn.Module, role: WorkerRole) -> None:
        self.active = role.world_size > 1 and dist.is_available() and dist.is_initialized()
        self.mass, self.buffers = role.mass, shared_buffers(model)
        experts = expert_parameters(model)
        if not role.expert_parallel:  # replicated experts: one world bucket with everything
            self.buckets = [([p for _, p in model.named_parameters()], None)]
            return
        self.buckets = [([p for _, p in shared_parameters(model)], None)]
        for expert, group in enumerate(role.expert_groups):
            if len(group) < 2:
                continue
            handle = dist.new_group(list(group)) if self.active else None
            if role.rank in group:
                self.buckets.append(([p for _, p in experts[expert]], handle))

    @property
    def bytes_per_step(self) -> int:
        """Payload this worker all-reduces per step."""
        return sum(p.numel() * p.element_size() for params, _ in self.buckets for p in params)

    def average_buffers(self) -> None:
        """Replace each shared floating-point buffer by its mass-weighted mean over the world (a collective).

        Running statistics (BatchNorm's) are not gradients, so the all-reduce of a step leaves each
        rank with its own: under expert parallelism each rank has seen only its experts' domains. Done
        before every evaluation, so that every rank evaluates, and rank 0 checkpoints, one trunk --
        the trunk whose statistics weigh each rank as its loss does (masses sum to 1).
        """
        if not self.active or not self.buffers:
            return
        flat = torch.cat([b.reshape(-1) * self.mass for b in self.buffers])
        dist.all_reduce(flat)
        offset = 0
        for buffer in self.buffers:
            buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()

    def __call__(self) -> None:
        if not self.active:
            return
        for params, group in self.buckets:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, group=group)
            offset = 0
            for p in params:
                p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
                offset += p.numel()
