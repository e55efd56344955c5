"""Worker roles, training steps, evaluation, checkpoint shards -- no Ray needed (every router: test_router_registry)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gemlab.engine.checkpoint import CheckpointMismatch, read_checkpoint, write_checkpoint
from gemlab.engine.config import ConfigError, as_plain
from gemlab.engine.parallel import data_parallel_role, expert_parallel_role, expert_parameters
from gemlab.engine.worker import Worker
from helpers import tiny


@pytest.mark.parametrize(("num_experts", "world"), [(4, 4), (6, 2), (5, 3), (2, 4), (3, 8)])
def test_expert_parallel_roles_cover_the_mixture_once(num_experts, world):
    rng = np.random.default_rng(num_experts * 10 + world)
    table = rng.integers(num_experts, size=9).tolist()
    weights = rng.dirichlet(np.ones(9))
    roles = [expert_parallel_role(table, weights, num_experts, r, world) for r in range(world)]
    assert math.isclose(sum(r.mass for r in roles), 1.0)
    assert sorted(d for r in roles for d in r.eval_domains) == list(range(9))
    for role in roles:
        assert all(table[d] in role.local_experts for d in role.train_domains)
        owned_mass = sum(weights[d] / len(role.expert_groups[table[d]]) for d in role.train_domains)
        assert math.isclose(role.mass, owned_mass)
    for expert in range(num_experts):  # every expert lives somewhere; replicas only when E < W
        holders = [r.rank for r in roles if expert in r.local_experts]
        assert holders == list(roles[0].expert_groups[expert]) and (len(holders) == 1 or num_experts < world)


def test_data_parallel_role_replicates_everything():
    roles = [data_parallel_role(5, 4, r, 2) for r in range(2)]
    assert all(r.local_experts is None and r.train_domains == (0, 1, 2, 3, 4) and r.mass == 0.5 for r in roles)
    assert roles[0].eval_domains + roles[1].eval_domains == (0, 2, 4, 1, 3)


@pytest.mark.slow
def test_an_expert_parallel_worker_builds_only_its_experts(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path, "moe.num_experts=2")
    workers = [Worker(as_plain(run.cfg), run.plan, run.table, r, 2) for r in range(2)]
    held = [set(expert_parameters(w.model)) for w in workers]
    assert held[0] | held[1] == {0, 1} and not held[0] & held[1]
    full = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1).model.state_dict()
    for worker in workers:  # the same weights wherever an expert or the trunk is built
        for key, value in worker.model.state_dict().items():
            assert torch.equal(value, full[key]), key


@pytest.mark.slow
def test_dqroute_class_weights_follow_the_run_and_are_checkpointed(digits_dir, tmp_path):
    extra = ["router=confidence", "router.epoch_steps=1", "data.long_tail={rho:10}"]
    run = tiny(digits_dir, tmp_path, *extra, "router.gamma=2.0")
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    difficulty = worker.model.head.difficulty  # DQRoute's experts are the model's classifier
    assert difficulty.gamma == 2.0 and run.cfg.moe.num_experts == 3  # the router's file sets its expert count
    for step in range(1, 4):
        worker.step(step)
    assert difficulty.accuracy.abs().sum() > 0 and int(difficulty.steps) == 3  # one epoch closed per step
    weights = difficulty.class_weights()
    assert torch.isclose(weights.mean(), torch.tensor(1.0)) and weights.std() > 0
    assert "head.difficulty.weights" in worker.model.state_dict()  # so a restored run keeps them


@pytest.mark.slow
def test_gem_sends_each_domain_to_its_planned_expert_only(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path, "moe.num_experts=3")
    results = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1).evaluate()
    for domain, result in results.items():
        assert result["expert_load"] == [1.0 if j == run.table[domain] else 0.0 for j in range(3)]


@pytest.mark.slow
def test_moge_trains_with_every_auxiliary_term_on_the_digit_sites(digits_dir, tmp_path):
    # four experts: MoGE's contrast needs two discovered domains in a batch (seed 0 finds three for three sites)
    overrides = ("router=metadata", "moe.num_experts=4", "router.cka_weight=0.05", "router.supcon_weight=0.1")
    run = tiny(digits_dir, tmp_path, *overrides)
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    stats = worker.step(1)
    assert {"aux/balance", "aux/cka", "aux/supcon"} <= set(stats) and stats["aux/supcon"] > 0


def test_metadata_router_needs_the_same_metadata_columns_everywhere(digits_dir, tmp_path):
    index = yaml.safe_load((digits_dir / "gemlab-data.yaml").read_text())
    for entry in index["domains"]:
        entry["splits"] = {split: {"root": str(digits_dir / spec["root"])} for split, spec in entry["splits"].items()}
    invert = next(entry for entry in index["domains"] if entry["name"] == "invert")
    del invert["metadata_columns"]
    (tmp_path / "gemlab-data.yaml").write_text(yaml.safe_dump(index))
    with pytest.raises(ConfigError, match=r"same metadata columns.*'invert-3shot': \[\]"):
        tiny(digits_dir, tmp_path, "router=metadata", "data.source=collection", f"data.path={tmp_path}")


def _train_and_save(run, world: int, folder: Path, steps: int = 2) -> list[Worker]:
    workers = [Worker(as_plain(run.cfg), run.plan, run.table, r, world) for r in range(world)]
    meta = {"plan_fingerprint": "p", "num_experts": run.cfg.moe.num_experts, "identity_digest": "i", "step": steps}
    for worker in workers:
        for step in range(1, steps + 1):
            worker.step(step)
        write_checkpoint(folder, worker.model, worker.optimizer, worker.role, meta, [{"step": steps}])
    return workers


@pytest.mark.slow
def test_a_checkpoint_from_two_workers_restores_on_one(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path, "moe.num_experts=2")
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    saved = _train_and_save(run, 2, folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "expert-0000.pt", "expert-0001.pt", "history.json", "meta.json", "shared.pt",
    ]  # fmt: skip
    restored = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    expected = {"plan_fingerprint": "p", "num_experts": 2, "identity_digest": "i"}
    step, history = read_checkpoint(folder, restored.model, restored.optimizer, expected)
    assert (step, history) == (2, [{"step": 2}])
    state = restored.model.state_dict()
    for worker in saved:  # each expert as its owner left it, the trunk as rank 0 left it
        named = [pair for pairs in expert_parameters(worker.model).values() for pair in pairs]
        if worker.role.rank == 0:
            expert_names = {n for n, _ in named}
            named += [(k, v) for k, v in worker.model.state_dict().items() if k not in expert_names]
        for key, value in named:
            assert torch.equal(state[key], value), key
    moments = [restored.optimizer.state[p]["exp_avg"] for p in restored.model.parameters()]
    assert len(moments) == len(list(restored.model.parameters())) and any(m.abs().sum() > 0 for m in moments)


@pytest.mark.slow
def test_a_checkpoint_of_another_plan_or_expert_count_is_refused(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    _train_and_save(run, 1, folder, steps=1)
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    good = {"plan_fingerprint": "p", "num_experts": 2, "identity_digest": "i"}
    for key, value in (("plan_fingerprint", "other"), ("num_experts", 4)):
        with pytest.raises(CheckpointMismatch, match=key):
            read_checkpoint(folder, worker.model, worker.optimizer, {**good, key: value})
    (folder / "expert-0001.pt").unlink()
    with pytest.raises(CheckpointMismatch, match="expert 1"):
        read_checkpoint(folder, worker.model, worker.optimizer, good)
    assert json.loads((folder / "meta.json").read_text())["step"] == 1


@pytest.mark.slow
def test_expert_parallel_sync_reduces_only_shared_and_replicated_expert_tensors(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path, "moe.num_experts=2")
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 2)
    synced = {id(p) for params, _ in worker.sync.buckets for p in params}
    experts = {id(p) for pairs in expert_parameters(worker.model).values() for _, p in pairs}
    assert experts and not synced & experts
    assert synced == {id(p) for n, p in worker.model.named_parameters() if id(p) not in experts}
    topk = tiny(digits_dir, tmp_path, "router=topk")
    replicated = Worker(as_plain(topk.cfg), topk.plan, topk.table, 0, 2)
    assert replicated.sync.bytes_per_step == sum(p.numel() * 4 for p in replicated.model.parameters())
