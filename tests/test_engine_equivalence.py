"""Expert-parallel GEM computes the mixture's gradient: W gloo processes against one process.

Each rank samples only its experts' domains and scales its loss by its
mixture mass; after the all-reduces, the shared gradients (on every rank) and
each expert's gradient (on its owners) must equal those of one process
computing ``sum_w mass_w * loss(batch_w)`` over the same batches.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F

from gemlab.data.sampler import MixtureSampler
from gemlab.engine.config import as_plain, compose_config
from gemlab.engine.parallel import expert_parallel_role, expert_parameters
from gemlab.engine.prepare import prepare
from gemlab.engine.tasks.classification import model_inputs
from gemlab.engine.worker import Worker
from helpers import tiny_detection_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _process_group(rank: int, world: int, port: int) -> Iterator[None]:
    """One gloo rank of ``world`` on the loopback interface, one thread, for the block."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _one_rank(rank: int, world: int, port: int, cfg: dict, plan, table, out: str) -> None:
    with _process_group(rank, world, port):
        worker = Worker(cfg, plan, table, rank, world)
        worker.backward(step=1)
        grads = {n: p.grad for n, p in worker.model.named_parameters() if p.grad is not None}
        torch.save({"grads": grads, "experts": list(worker.role.local_experts)}, Path(out) / f"rank{rank}.pt")


def _reference_grads(cfg: dict, plan, table, world: int) -> dict[str, torch.Tensor]:
    reference = Worker(cfg, plan, table, 0, 1)  # one process, every expert
    model, mixture = reference.model, reference.mixture
    model.zero_grad(set_to_none=True)
    total = 0
    for rank in range(world):
        role = expert_parallel_role(table, mixture.weights, cfg["moe"]["num_experts"], rank, world)
        if not role.train_domains:
            continue
        sampler = MixtureSampler(mixture, cfg["trainer"]["batch_size"], cfg["seed"], rank, role.train_domains)
        batch = reference.data.batch(sampler.batch(1))
        out = model(batch["images"], **model_inputs(batch, with_labels=True))
        total = total + role.mass * (F.cross_entropy(out.logits, batch["labels"]) + out.aux_loss)
    total.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
@pytest.mark.parametrize(("num_experts", "world"), [(2, 2), (3, 2), (2, 4)])
def test_expert_parallel_gradients_equal_the_single_process_mixture_gradients(digits_dir, tmp_path, num_experts, world):
    overrides = ["experiment=tiny", f"data.path={digits_dir}", f"storage_path={tmp_path}", "data.shots=null"]
    run = prepare(compose_config([*overrides, f"moe.num_experts={num_experts}", "plan.capacity=2"]))
    cfg = as_plain(run.cfg)
    assert len(set(run.table)) == num_experts or num_experts > len(run.table)
    mp.spawn(_one_rank, args=(world, _free_port(), cfg, run.plan, run.table, str(tmp_path)), nprocs=world)
    expected = _reference_grads(cfg, run.plan, run.table, world)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    expert_names = {
        n for pairs in expert_parameters(Worker(cfg, run.plan, run.table, 0, 1).model).values() for n, _ in pairs
    }
    checked = set()
    for rank in ranks:
        for name, grad in rank["grads"].items():
            assert torch.allclose(grad, expected[name], rtol=1e-4, atol=1e-6), name
            checked.add(name)
    shared = set(expected) - expert_names
    assert shared <= set(ranks[0]["grads"]) and expert_names & set(expected) <= checked


def _buffers_after_evaluation(rank: int, world: int, port: int, cfg: dict, plan, table, out: str) -> None:
    with _process_group(rank, world, port):
        worker = Worker(cfg, plan, table, rank, world)
        worker.step(step=1)  # BatchNorm's running statistics move with this rank's own domains
        before = {n: b.clone() for n, b in worker.model.named_buffers() if b.is_floating_point()}
        worker.evaluate()
        after = {n: b.clone() for n, b in worker.model.named_buffers() if b.is_floating_point()}
        torch.save({"before": before, "after": after, "mass": worker.role.mass}, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_every_rank_evaluates_with_the_mass_weighted_running_statistics(synth_uodb_dir, tmp_path):
    """Expert-parallel ranks see different domains, so the detector backbone's BatchNorm statistics drift
    apart; evaluation (and rank 0's checkpoint) use their mean weighted by each rank's mass, on every rank."""
    run = prepare(compose_config(tiny_detection_overrides(synth_uodb_dir, tmp_path)))
    cfg = as_plain(run.cfg)
    mp.spawn(_buffers_after_evaluation, args=(2, _free_port(), cfg, run.plan, run.table, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    names = [n for n in ranks[0]["before"] if n.endswith("running_mean")]
    assert names and not torch.allclose(ranks[0]["before"][names[0]], ranks[1]["before"][names[0]])
    for name in names:
        expected = sum(r["mass"] * r["before"][name] for r in ranks)
        assert all(torch.allclose(r["after"][name], expected, atol=1e-6) for r in ranks), name
