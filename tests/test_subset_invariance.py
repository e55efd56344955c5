"""Subset-shared invariance (seed 002) and leave-one-domain-out evaluation: the CORAL term against its
equations, which domain pairs each mode aligns, the held-out domain kept out of training but in
evaluation and routing, config refusals, the results row and report table, and one short run."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from gemlab.data.domain import Domain
from gemlab.data.errors import DataError
from gemlab.data.mixture import DomainMixture
from gemlab.data.records import Category, Sample
from gemlab.data.sampler import MixtureSampler
from gemlab.engine.config import ConfigError, as_plain
from gemlab.engine.data import build_mixture
from gemlab.engine.invariance import build_alignment, check_alignment_parallelism
from gemlab.engine.outputs import record_metrics, results_table, write_table
from gemlab.engine.parallel import data_parallel_role, expert_parallel_role
from gemlab.engine.prepare import solve_plan
from gemlab.engine.worker import Worker
from gemlab.moe.losses import coral_loss
from gemlab.moe.subset_invariance import FeatureAlignment, subset_coral_penalty
from gemlab.plan.errors import PlanInputError
from gemlab.plan.heldout import split_affinity, with_heldout_tasks
from gemlab.plan.plan import Plan
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.strategies import StrategyOptions
from gemlab.report.heldout import heldout_table
from gemlab.report.results import load_results
from gemlab.report.tables import to_markdown
from gemlab.storage import Location
from helpers import evaluation_record, tiny, tiny_config

DOMAINS = ["rot0", "rot30", "colour", "invert"]  # holdout tests: four domains, two experts


def _domain(name: str, size: int) -> Domain:
    category = Category(1, "digit")
    samples = tuple(Sample(Path(f"/{name}/{i}.png"), 8, 8, i + 1, label=1) for i in range(size))
    return Domain(name, "classification", (category,), {"train": samples})


def _covariance_eq2(rows: list[list[float]]) -> list[list[float]]:
    """Deep CORAL Eq. 2 written out: C = (D^T D - (1^T D)^T (1^T D) / n) / (n - 1), entry by entry."""
    n, d = len(rows), len(rows[0])
    sums = [sum(rows[i][k] for i in range(n)) for k in range(d)]
    return [
        [(sum(rows[i][a] * rows[i][b] for i in range(n)) - sums[a] * sums[b] / n) / (n - 1) for b in range(d)]
        for a in range(d)
    ]


def _coral_eq1(source: list[list[float]], target: list[list[float]]) -> float:
    """Deep CORAL Eq. 1 written out: the squared Frobenius distance of the covariances over 4 d^2."""
    cs, ct, d = _covariance_eq2(source), _covariance_eq2(target), len(source[0])
    return sum((cs[a][b] - ct[a][b]) ** 2 for a in range(d) for b in range(d)) / (4 * d * d)


def _features() -> tuple[torch.Tensor, torch.Tensor]:
    """12 fixed rows of 3 features: domains 0..3, three rows each, each domain scaled differently."""
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(12, 3, generator=generator, dtype=torch.float64)
    features *= torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64).repeat_interleave(3)[:, None]
    return features, torch.arange(4).repeat_interleave(3)


def test_coral_loss_is_deep_coral_eq1_on_eq2_covariances():
    features, _ = _features()
    source, target = features[:3], features[6:9]
    expected = _coral_eq1(source.tolist(), target.tolist())
    assert coral_loss(source, target).item() == pytest.approx(expected, rel=1e-12)
    assert expected > 0


def test_the_penalty_is_the_mean_coral_over_pairs_on_one_expert():
    """L_inv = (1/|P|) Σ_{(a,b) ∈ P} CORAL(F_a, F_b), P = domain pairs present that the table puts together."""
    features, domains = _features()
    rows = {d: features[domains == d].tolist() for d in range(4)}
    for table in ([0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 2, 3], [1, 1, 1, 0]):
        pairs = [(a, b) for a, b in itertools.combinations(range(4), 2) if table[a] == table[b]]
        expected = sum(_coral_eq1(rows[a], rows[b]) for a, b in pairs) / len(pairs) if pairs else 0.0
        got = subset_coral_penalty(features, domains, torch.tensor(table))
        assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-15), table


def test_global_and_subset_alignment_differ_as_their_pairs_do():
    features, domains = _features()
    features.requires_grad_(True)
    plan_table = [0, 0, 1, 0]  # domain 2 alone on expert 1
    subset = FeatureAlignment(plan_table, weight=1.0, mode="subset")
    everything = FeatureAlignment([0] * 4, weight=1.0, mode="global")
    (grad_subset,) = torch.autograd.grad(subset(features, domains), features)
    (grad_global,) = torch.autograd.grad(everything(features, domains), features)
    alone = domains == 2
    assert grad_subset[alone].abs().max() == 0  # nothing pulls the domain its expert serves alone
    assert grad_global[alone].abs().max() > 0  # global alignment does
    assert subset(features, domains).item() != pytest.approx(everything(features, domains).item())
    # a batch in which only domains of different experts are present has nothing to align
    two = torch.isin(domains, torch.tensor([0, 2]))
    assert subset(features[two], domains[two]).item() == 0.0 and everything(features[two], domains[two]).item() > 0


def test_the_alignment_table_follows_the_plan_and_global_ignores_it():
    cfg = {"invariance": {"mode": "subset", "weight": 2.0}, "router": {"name": "gem"}}
    alignment = build_alignment(cfg, 4, (1, 0, 1, 0))
    assert alignment.table.tolist() == [1, 0, 1, 0] and alignment.weight == 2.0
    assert alignment.state_dict() == {}  # nothing of it in a checkpoint
    cfg["invariance"]["mode"] = "global"
    assert build_alignment(cfg, 4, None).table.tolist() == [0, 0, 0, 0]
    cfg["invariance"]["mode"] = "none"
    assert build_alignment(cfg, 4, (1, 0, 1, 0)) is None


def test_a_held_out_domain_is_never_drawn_and_weighs_nothing():
    mixture = DomainMixture([_domain("a", 300), _domain("b", 100), _domain("c", 50)], alpha=0.0, heldout=("b",))
    assert mixture.heldout == (1,) and mixture.training == (0, 2)
    np.testing.assert_allclose(mixture.weights, [0.5, 0.0, 0.5])  # α = 0 too: 0**0 would be 1
    sampler = MixtureSampler(mixture, batch_size=64, seed=0)  # even over every domain
    drawn = {d for step in range(50) for d, _ in sampler.batch(step)}
    assert drawn == {0, 2}
    with pytest.raises(DataError, match="held out"):
        MixtureSampler(mixture, batch_size=4, seed=0, domain_ids=[1])
    with pytest.raises(DataError, match="not among the domains"):
        DomainMixture([_domain("a", 3)], heldout=("z",))
    with pytest.raises(DataError, match="nothing is left to train on"):
        DomainMixture([_domain("a", 3)], heldout=("a",))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_roles_train_without_the_held_out_domain_and_still_evaluate_it(world):
    table, weights, heldout = [0, 1, 0, 1], [0.4, 0.0, 0.3, 0.3], (1,)
    for roles in (
        [expert_parallel_role(table, weights, 2, r, world, heldout) for r in range(world)],
        [data_parallel_role(4, 2, r, world, heldout) for r in range(world)],
    ):
        assert all(1 not in role.train_domains for role in roles)
        assert sorted(d for role in roles for d in role.eval_domains) == [0, 1, 2, 3]
        assert sum(role.mass for role in roles) == pytest.approx(1.0)


def test_the_held_out_domain_is_routed_to_its_closest_anchor_without_shaping_the_plan():
    means = np.array([[1.0, 0.0], [0.9, 0.2], [0.0, 1.0], [0.1, 1.0]])
    names = ["a", "b", "c", "d"]
    costs, heldout_costs = split_affinity(means, names, [1], num_experts=2, seed=0)
    alone, _ = split_affinity(means[[0, 2, 3]], ["a", "c", "d"], [], num_experts=2, seed=0)
    np.testing.assert_array_equal(costs.costs, alone.costs)  # the held-out row changes no training cost
    problem = AssignmentProblem.count(costs.costs, 2, costs.task_names, costs.expert_names)
    plan = make_plan(problem, "gem", StrategyOptions(precision=8, seed=0))
    full = with_heldout_tasks(plan, {1: "b"}, heldout_costs)
    assert full.task_names == ("a", "b", "c", "d")
    expert = int(np.argmax(heldout_costs[0]))
    assert full.assignment[1] == expert == full.assignment[0]  # b looks like a: a's expert
    assert full.loads[1] == 0 and full.violations == {}
    assert full.lp_bound == pytest.approx(plan.lp_bound + heldout_costs[0].max())
    assert full.details["heldout"] == {"b": full.expert_names[expert]}
    assert Plan.from_json(full.to_json()).to_json() == full.to_json()
    with pytest.raises(PlanInputError, match="held-out tasks"):
        with_heldout_tasks(plan, {1: "b"}, heldout_costs[:, :1])


def test_a_holdout_plan_places_the_training_domains_as_a_run_without_that_domain(digits_dir, tmp_path):
    """The held-out domain is last, so the others' calibration draws are the same in both runs."""
    keys = ("data.shots=null", "affinity.samples_per_domain=16")
    cfg = tiny_config(digits_dir, tmp_path, f"data.domains=[{','.join(DOMAINS)}]", "data.holdout=invert", *keys)
    plan = solve_plan(cfg, build_mixture(cfg.data, 0))
    without = tiny_config(digits_dir, tmp_path, f"data.domains=[{','.join(DOMAINS[:3])}]", *keys)
    reference = solve_plan(without, build_mixture(without.data, 0))
    assert plan.task_names == tuple(DOMAINS) and plan.assignment[:3].tolist() == reference.assignment.tolist()
    assert set(plan.details["heldout"]) == {"invert"}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["invariance.mode=everything"], "invariance.mode"),
        (["invariance.mode=subset", "invariance.weight=-1.0"], "invariance.weight"),
        (["invariance.mode=subset", "router=topk"], "invariance.mode=subset: router=topk"),
        (["invariance.mode=global", "trainer.num_workers=2"], "invariance.mode=global: router=gem"),
        (["data.holdout=rot45"], "data.holdout='rot45'"),
    ],
)
def test_config_errors_name_the_key(digits_dir, tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        tiny(digits_dir, tmp_path, *overrides)


def test_a_learned_router_aligns_the_subsets_of_the_plan_it_is_supervised_by(digits_dir, tmp_path):
    from gemlab.engine.model import build_model

    run = tiny(digits_dir, tmp_path, "router=damex", "invariance.mode=subset", "invariance.weight=1.0")
    assert run.table is None  # damex trains data-parallel: no routing table, but a domain-level plan
    model = build_model(as_plain(run.cfg), run.mixture, run.plan)
    assert model.alignment.table.tolist() == run.plan.assignment.tolist()


def test_global_alignment_is_refused_on_expert_parallel_workers_only():
    cfg = {"invariance": {"mode": "global"}, "router": {"name": "gem"}}
    check_alignment_parallelism(cfg, expert_parallel=False, max_workers=4)
    check_alignment_parallelism(cfg, expert_parallel=True, max_workers=1)
    with pytest.raises(ConfigError, match=r"invariance\.mode=global"):
        check_alignment_parallelism(cfg, expert_parallel=True, max_workers=2)
    check_alignment_parallelism({**cfg, "invariance": {"mode": "subset"}}, expert_parallel=True, max_workers=2)


@pytest.mark.slow
def test_a_worker_trains_without_the_held_out_domain_aligns_and_evaluates_it(digits_dir, tmp_path):
    run = tiny(
        digits_dir,
        tmp_path,
        f"data.domains=[{','.join(DOMAINS)}]",
        "data.holdout=rot30",
        "invariance.mode=subset",
        "invariance.weight=5.0",
    )
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    assert worker.model.alignment.table.tolist() == list(run.table)
    drawn = {d for step in range(1, 30) for d, _ in worker.batch_pairs(step)}
    assert 1 not in drawn and drawn == {0, 2, 3}
    stats = worker.step(1)
    assert "invariance" in stats and stats["invariance"] >= 0
    assert sorted(worker.evaluate()) == [0, 1, 2, 3]


def test_the_results_repeat_the_held_out_score_and_the_report_tabulates_it(digits_dir, tmp_path):
    record = {**evaluation_record(6, 0.8), "heldout": ["invert"]}
    rows = record_metrics(record)
    assert ("invert", "heldout_accuracy", 0.4) in rows and not [r for r in rows if r[0] == "rot0" and "heldout" in r[1]]
    cfg = tiny_config(digits_dir, tmp_path)
    files = []
    for mode, seed, accuracy in (("none", 0, 0.6), ("none", 1, 0.8), ("subset", 0, 0.9), ("subset", 1, 0.7)):
        extra = {"param:invariance.mode": mode, "param:data.holdout": "invert", "param:seed": float(seed)}
        history = [{**evaluation_record(6, accuracy), "heldout": ["invert"]}]
        table = results_table(cfg, f"run-{mode}-{seed}", history, extra)
        files.append(write_table(table, Location.parse(tmp_path / f"{mode}{seed}.parquet")))
    frame = load_results([str(f) for f in files])
    table = heldout_table(frame)
    assert table.columns == ["invert", "Avg."]
    cells = dict(table.rows)
    assert cells["gem invariance.mode=none"]["invert"][:2] == pytest.approx((0.35, 0.05))
    assert cells["gem invariance.mode=subset"]["invert"][:2] == pytest.approx((0.4, 0.05))
    assert "held-out accuracy" in to_markdown(table)
    assert heldout_table(load_results([str(files[0])]).query("metric != 'heldout_accuracy'")) is None


@pytest.mark.ray
@pytest.mark.slow
def test_one_short_leave_one_domain_out_run(ray_session, digits_dir, tmp_path):
    from gemlab.engine.launch import run_training
    from gemlab.engine.outputs import write_results

    run = tiny(
        digits_dir,
        tmp_path,
        f"data.domains=[{','.join(DOMAINS)}]",
        "data.holdout=colour",
        "invariance.mode=subset",
        "invariance.weight=10.0",
        "trainer.num_workers=2",
    )
    result = run_training(run, lambda event: None)
    table = pq.read_table(write_results(run.run_dir, run.cfg, run.name, result.history).path).to_pylist()
    heldout = [r for r in table if r["metric"] == "heldout_accuracy"]
    assert [r["domain"] for r in heldout] == ["colour", "colour"] and 0 <= heldout[-1]["value"] <= 1
    assert any(r["metric"] == "train/invariance" for r in table)


def test_the_shipped_experiment_and_sweep_compose():
    from gemlab.engine.config import compose_config

    cfg = compose_config(["experiment=subset_invariance_digits"])
    assert cfg.data.holdout in cfg.data.domains and cfg.invariance.mode == "subset"
    sweep = compose_config(["sweep=subset_invariance"])
    space = sweep.sweep.space
    assert list(space["data.holdout"]) == list(sweep.data.domains)
    assert list(space["invariance.mode"]) == ["none", "global", "subset"]
