"""One training worker: its role, its share of the model, and one optimisation step.

Independent of Ray: the Ray train loop (:mod:`.loop`) drives it, and tests
drive it directly inside a plain ``torch.distributed`` process group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from gemlab.data.sampler import MixtureSampler
from gemlab.engine.data import build_mixture, replay_of
from gemlab.engine.invariance import check_alignment_parallelism
from gemlab.engine.model import build_model
from gemlab.engine.optim import LRSchedule, build_optimizer
from gemlab.engine.parallel import GradientSync, WorkerRole, data_parallel_role, expert_parallel_role
from gemlab.engine.pretrained import load_trunk
from gemlab.engine.router_state import RouterStateSync
from gemlab.engine.tasks import task_of


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of one rank's step: a restored run replays the very random streams it would have used."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class Worker:
    """Builds this rank's model (shared trunk + its experts), optimizer, gradient sync, task data and sampler."""

    def __init__(self, cfg: Mapping[str, Any], plan, table: tuple[int, ...] | None, rank: int, world_size: int):
        self.cfg, self.table = cfg, table
        self.mixture = build_mixture(cfg["data"], cfg["seed"], replay=replay_of(cfg["adapt"]))
        self.task = task_of(self.mixture, cfg["objective"])  # the data's task, or a self-supervised objective
        num_experts = cfg["moe"]["num_experts"]
        untrained = self.mixture.untrained  # held out, or not replayed: evaluated, never sampled
        if table is not None:
            self.role = expert_parallel_role(table, self.mixture.weights, num_experts, rank, world_size, untrained)
        else:
            self.role = data_parallel_role(len(self.mixture.domains), num_experts, rank, world_size, untrained)
        check_alignment_parallelism(cfg, self.role.expert_parallel, world_size)
        self.model = build_model(cfg, self.mixture, plan, self.role.local_experts).train()
        trainer = cfg["trainer"]
        if trainer["init_from"] is not None:  # before the optimizer: it starts from the loaded trunk
            load_trunk(self.model, trainer["init_from"], "trainer.init_from")
        self.optimizer = build_optimizer(self.model, trainer)
        self.schedule = LRSchedule.from_config(trainer)
        self.sync = GradientSync(self.model, self.role)
        self.router_state = RouterStateSync(self.model, self.role)
        self.data = self.task.data(self.mixture, cfg["data"]["image_size"])
        self.sampler = (
            MixtureSampler(self.mixture, trainer["batch_size"], cfg["seed"], rank, self.role.train_domains)
            if self.role.train_domains
            else None
        )

    def batch_pairs(self, step: int) -> list[tuple[int, int]]:
        """The sampler's batch of ``step``; under a domain -> expert table, ordered by expert.

        The order changes no loss (a mean over samples), but a batch in expert order is routed
        without a sort, a gather or a scatter (see ``SparseRouting.from_choices``).
        """
        pairs = self.sampler.batch(step)
        return pairs if self.table is None else sorted(pairs, key=lambda pair: self.table[pair[0]])

    def backward(self, step: int) -> dict[str, float]:
        """Forward this rank's batch of ``step``, backward its mass-scaled loss, all-reduce; the step's losses."""
        torch.manual_seed(step_seed(self.cfg["seed"], self.role.rank, step))
        self.optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = {}
        if self.sampler is not None:
            loss, stats = self.task.loss(self.model, self.data.batch(self.batch_pairs(step)))
            (loss * self.role.mass).backward()
        self.sync()
        return stats

    def step(self, step: int) -> dict[str, float]:
        """One update at the lr of ``step``; then router and criterion state is made the world's (a collective)."""
        stats = self.backward(step)
        self.schedule.apply(self.optimizer, step)
        self.optimizer.step()
        self.router_state()
        return stats

    def evaluate(self) -> dict[int, dict[str, Any]]:
        """This rank's domains evaluated, after the shared running statistics are averaged (every rank calls it)."""
        self.sync.average_buffers()
        split, batch_size = self.cfg["data"]["eval_split"], self.cfg["trainer"]["eval_batch_size"]
        return self.task.evaluate(self.model, self.data, self.role.eval_domains, split, batch_size)


def role_summary(role: WorkerRole) -> dict[str, Any]:
    return {
        "rank": role.rank,
        "world_size": role.world_size,
        "experts": None if role.local_experts is None else list(role.local_experts),
        "train_domains": list(role.train_domains),
        "mass": role.mass,
    }
