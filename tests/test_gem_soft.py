"""``gem_soft``, GEM without rounding: each domain's tokens through the LP plan's experts, weighted by x.

Checked against the definition written out, y = Σ_j x_dj f_j(token), on the LP plans of real load
problems; against GEM's lookup where the LP is integral (count capacities); and in a run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gemlab.engine.checkpoint import write_checkpoint
from gemlab.engine.config import as_plain, identity_digest
from gemlab.engine.cross_expert import cross_expert_accuracy
from gemlab.engine.launch import run_training
from gemlab.engine.prepare import plan_fingerprint
from gemlab.engine.worker import Worker
from gemlab.moe.experts import Experts
from gemlab.moe.layer import MoELayer
from gemlab.moe.registry import ROUTERS, build_router
from gemlab.moe.routers.gem import GEMRouter
from gemlab.moe.routers.gem_soft import GEMSoftRouter
from gemlab.moe.spec import RunFacts
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.synthetic import random_affinity
from gemlab.storage import Location
from helpers import tiny

DIM, HIDDEN = 6, 10
# nine digit domains on five experts, each holding 1.75 x the fair share of the sampling mass: the LP splits two
LOAD = ("data.domains=null", "moe.num_experts=5", "plan.capacity_mode=load", "plan.slack=1.75")


def _load_plan():
    """A gem plan of 6 domains on 3 experts whose loads make the LP split some of them."""
    loads = np.array([0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    problem = AssignmentProblem.load(random_affinity(6, 3, 4), loads, 1.1 * loads.sum() / 3)
    return make_plan(problem, "gem")


def _layer(router: torch.nn.Module, num_experts: int) -> MoELayer:
    torch.manual_seed(0)
    return MoELayer(router=router, experts=Experts(num_experts, DIM, HIDDEN))


def test_a_domains_tokens_are_its_experts_outputs_weighted_by_the_lp_plan():
    plan = _load_plan()
    assert plan.split_tasks  # a load LP splits domains: the case where the router is not GEM's lookup
    x = plan.fractional
    layer = _layer(GEMSoftRouter(x, 3), 3)
    domain = torch.tensor([0, 1, 2, 3, 4, 5, 2, 0])
    tokens = torch.randn(8, 4, DIM)  # (B, T, D)
    y, routing = layer(tokens, domain=domain)
    expected = torch.zeros_like(tokens)
    for b, d in enumerate(domain.tolist()):  # y = Σ_j x_dj f_j(token), written out
        for j in range(3):
            expected[b] += float(x[d, j]) * layer.experts.run_one(j, tokens[b])
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
    per_domain = (x[domain.numpy()] > 0).sum(axis=0) * 4  # tokens each expert receives: 4 per sample it serves
    assert routing.counts.tolist() == per_domain.tolist()


def test_with_an_integral_lp_it_routes_exactly_as_gems_lookup():
    plan = make_plan(AssignmentProblem.count(random_affinity(5, 3, 1), 2), "gem")
    assert not plan.split_tasks and np.array_equal(plan.fractional.argmax(axis=1), plan.assignment)
    domain, tokens = torch.tensor([4, 0, 3, 1, 2, 0]), torch.randn(6, 3, DIM)
    soft, _ = _layer(GEMSoftRouter(plan.fractional, 3), 3)(tokens, domain=domain)
    hard, _ = _layer(GEMRouter(plan.assignment.tolist(), 3), 3)(tokens, domain=domain)
    assert torch.equal(soft, hard)


def test_a_plan_without_an_lp_solution_is_refused_by_router_and_strategy():
    greedy = make_plan(AssignmentProblem.count(random_affinity(4, 2, 0), 2), "greedy")
    assert greedy.fractional is None
    with pytest.raises(ValueError, match=r"gem_soft router: plan\.strategy=greedy .* use plan\.strategy=gem"):
        build_router("gem_soft", DIM, RunFacts(num_experts=2, num_domains=4, plan=greedy))
    with pytest.raises(ValueError, match="the plan has 3 experts, the layer 2"):
        build_router("gem_soft", DIM, RunFacts(num_experts=2, num_domains=6, plan=_load_plan()))


@pytest.mark.parametrize(
    ("x", "match"),
    [
        ([[0.5, 0.4], [0.0, 1.0]], "summing to 1"),
        ([[1.5, -0.5], [0.0, 1.0]], "summing to 1"),
        ([[1.0, 0.0, 0.0]], r"not \(domains, 2\)"),
    ],
)
def test_a_plan_that_is_not_weights_over_the_experts_is_refused(x, match):
    with pytest.raises(ValueError, match=match):
        GEMSoftRouter(np.array(x), 2)


def test_domain_ids_are_required_and_checked():
    layer = _layer(GEMSoftRouter(np.eye(2), 2), 2)
    with pytest.raises(ValueError, match="needs the domain id"):
        layer(torch.randn(2, 3, DIM))
    with pytest.raises(ValueError, match=r"domain ids must be in 0\.\.1"):
        layer(torch.randn(2, 3, DIM), domain=torch.tensor([0, 2]))


def test_forcing_an_expert_sends_every_token_there_and_is_undone_even_on_error():
    layer = _layer(GEMSoftRouter(_load_plan().fractional, 3), 3)
    tokens, domain = torch.randn(6, 2, DIM), torch.arange(6)
    before, _ = layer(tokens, domain=domain)
    with pytest.raises(RuntimeError, match="inside"), layer.router.forced(2):
        forced, _ = layer(tokens, domain=domain)
        torch.testing.assert_close(forced, layer.experts.run_one(2, tokens.reshape(-1, DIM)).reshape(tokens.shape))
        raise RuntimeError("raised inside")
    assert torch.equal(layer(tokens, domain=domain)[0], before)
    with pytest.raises(ValueError, match="cannot force expert 3"):
        layer.router.forced(3)


def test_its_spec_follows_a_domain_plan_without_a_table_and_can_be_forced():
    spec = ROUTERS["gem_soft"]
    assert spec.plan_level == "domain" and not spec.expert_parallel and spec.forcible


@pytest.mark.slow
def test_a_load_plan_run_trains_data_parallel_and_has_a_cross_expert_matrix(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path, "router=gem_soft", *LOAD)
    assert run.table is None and run.plan.capacity_mode == "load" and run.plan.split_tasks
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    assert all(math.isfinite(worker.step(step)["loss"]) for step in (1, 2))
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    meta = {
        "plan_fingerprint": plan_fingerprint(run.plan),
        "num_experts": 5,
        "identity_digest": identity_digest(run.cfg),
        "step": 2,
    }
    write_checkpoint(folder, worker.model, worker.optimizer, worker.role, meta, [{"step": 2}])
    matrix = cross_expert_accuracy(run.cfg, run.run_dir, Location.parse(folder))
    evaluated = worker.evaluate()
    for d, name in enumerate(run.mixture.names):
        assert len(matrix[name]) == 5
        if d not in run.plan.split_tasks:  # a domain on one expert: forcing that expert changes nothing
            expert = int(run.plan.assignment[d])
            assert matrix[name][expert] == pytest.approx(evaluated[d]["accuracy"])


@pytest.mark.ray
@pytest.mark.slow
def test_a_load_plan_run_trains_end_to_end_on_ray(ray_session, digits_dir, tmp_path):
    result = run_training(tiny(digits_dir, tmp_path, "router=gem_soft", *LOAD, "trainer.max_steps=2"), lambda e: None)
    assert [r["step"] for r in result.history] == [2]
    assert sorted(w["rank"] for w in result.workers) == [0, 1]
    assert all(w["experts"] is None for w in result.workers)  # data-parallel: every worker holds every expert
    split = [result.prepared.mixture.names[d] for d in result.prepared.plan.split_tasks]
    for name in split:  # a split domain's tokens reach more than one expert
        assert sum(share > 0 for share in result.history[-1]["domains"][name]["expert_load"]) > 1
