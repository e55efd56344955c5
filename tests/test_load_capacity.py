"""Load-capacity plans in training: the config keys, the problem they build, what a plan shows, and two
precisions trained on a load LP that is fractional.

In load mode a domain's load is its sampling mass p_d and an expert holds ``plan.slack`` x the fair
share, so the LP splits domains and the compiler's precision p has something to round.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemlab.cli import main
from gemlab.engine.config import ConfigError, as_plain
from gemlab.engine.data import build_mixture
from gemlab.engine.launch import run_training
from gemlab.engine.parallel import expert_masses
from gemlab.engine.prepare import PLAN_FILE, assignment_problem
from gemlab.engine.worker import Worker
from gemlab.plan.affinity import CostMatrix, save_cost_matrix
from gemlab.plan.lp import solve_relaxation
from gemlab.plan.placement import place_experts
from gemlab.plan.plan import Plan
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.rounding import bit_scaling_round
from gemlab.plan.strategies import StrategyOptions
from helpers import tiny, tiny_config

# nine digit domains (invert cut to 3 images per class) on five experts with 1.75 x the fair share each:
# the LP splits two domains, and the compiler at p = 1 and p = 8 places two domains differently
LOAD = ("data.domains=null", "moe.num_experts=5", "plan.capacity_mode=load", "plan.slack=1.75")


@pytest.fixture(scope="module")
def load_run(digits_dir, tmp_path_factory):
    return tiny(digits_dir, tmp_path_factory.mktemp("runs"), *LOAD)


def _costs(names: list[str], num_experts: int) -> CostMatrix:
    rng = np.random.default_rng(0)
    return CostMatrix(rng.random((len(names), num_experts)), tuple(names), tuple(f"e{j}" for j in range(num_experts)))


# ------------------------------------------------------------------------------------------ config keys
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["plan.capacity_mode=loads"], r"plan\.capacity_mode='loads': expected one of \('count', 'load'\)"),
        (["plan.slack=0.9"], r"plan\.slack=0\.9: expected a finite number >= 1"),
        (["plan.slack=nan"], r"plan\.slack=nan"),
        (["plan.slack=lots"], r"plan\.slack='lots'"),
        (["plan.capacity_mode=load", "router=class_gem"], r"plan\.level='class': expected domain"),
        (["plan.capacity_mode=load", "plan.capacity=2"], r"plan\.capacity=2: expected null under plan\.capacity_mode"),
        (["plan.repair=maybe"], r"plan\.repair='maybe': expected true or false"),
    ],
)
def test_plan_keys_that_no_run_can_use_are_refused_by_name(digits_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(digits_dir, tmp_path, *overrides)


# ------------------------------------------------------------------------------------- the problem
def test_count_mode_builds_the_count_problem_it_always_did(digits_dir, tmp_path):
    cfg = tiny_config(digits_dir, tmp_path, "moe.num_experts=2")
    mixture = build_mixture(cfg.data, cfg.seed)
    costs = _costs(list(mixture.names), 2)
    problem = assignment_problem(cfg, costs, mixture)
    expected = AssignmentProblem.count(costs.costs, 2, costs.task_names, costs.expert_names)  # ⌈3 / 2⌉ per expert
    assert problem.mode == "count" and np.array_equal(problem.capacity, expected.capacity)
    assert np.array_equal(problem.loads, np.ones(3))
    cfg.plan.capacity = 3
    assert problem.capacity.tolist() != assignment_problem(cfg, costs, mixture).capacity.tolist() == [3, 3]


def test_load_mode_weighs_each_domain_by_its_sampling_mass_found_by_name(digits_dir, tmp_path):
    cfg = tiny_config(digits_dir, tmp_path, "moe.num_experts=2", "plan.capacity_mode=load", "plan.slack=1.5")
    mixture = build_mixture(cfg.data, cfg.seed)
    names = list(reversed(mixture.names))  # the cost matrix's order, not the mixture's
    problem = assignment_problem(cfg, _costs(names, 2), mixture)
    assert problem.mode == "load"
    assert problem.loads.tolist() == [mixture.weights[mixture.index(name)] for name in names]
    assert problem.capacity.tolist() == pytest.approx([1.5 * 1.0 / 2] * 2)  # slack x total mass / experts


def test_a_domain_heavier_than_an_expert_names_the_slack_that_would_fit_it(digits_dir, tmp_path):
    cfg = tiny_config(digits_dir, tmp_path, "moe.num_experts=3", "plan.capacity_mode=load", "plan.slack=1.25")
    mixture = build_mixture(cfg.data, cfg.seed)
    costs = _costs(list(mixture.names), 3)
    heaviest = float(mixture.weights.max())
    needed = np.ceil(heaviest * 3 * 1000) / 1000
    with pytest.raises(
        ConfigError, match=rf"plan\.slack=1\.25: domain 'rot0' .* smallest slack that fits it is {needed:g}"
    ):
        assignment_problem(cfg, costs, mixture)
    cfg.plan.slack = float(needed)
    assert assignment_problem(cfg, costs, mixture).capacity.max() >= heaviest


def test_capacities_without_an_integral_plan_name_the_slack(digits_dir, tmp_path):
    # rot0 and colour each weigh 0.494 and invert 0.012: two experts of 0.5 hold no split of the three
    with pytest.raises(ConfigError, match=r"no integral plan exists \(plan\.slack=1\.0: a larger slack"):
        tiny(digits_dir, tmp_path, "moe.num_experts=2", "plan.capacity_mode=load", "plan.slack=1.0")


# ---------------------------------------------------------------------------------- the run's plan
def test_sampling_weights_and_worker_placement_follow_the_plans_loads(load_run):
    plan, mixture, table = load_run.plan, load_run.mixture, load_run.table
    assert plan.capacity_mode == "load" and plan.loads.tolist() == mixture.weights.tolist()
    assert plan.capacity.tolist() == pytest.approx([1.75 / 5] * 5)
    masses = expert_masses(table, mixture.weights, 5)  # what expert-parallel placement weighs experts by
    assert masses.tolist() == plan.expert_load.tolist()
    for world in (2, 3):
        role = Worker(as_plain(load_run.cfg), plan, table, 0, world).role
        placement = place_experts(plan.expert_load, world)
        assert role.local_experts == tuple(placement.worker_experts[0])
        assert role.mass == pytest.approx(sum(masses[j] / len(placement.expert_workers[j]) for j in role.local_experts))


def test_the_plan_records_the_lp_split_and_what_the_compiler_made_of_it(load_run):
    plan = load_run.plan
    x = solve_relaxation(plan.problem).x
    assert np.array_equal(plan.fractional, x)  # plan.json keeps the LP solution itself
    split = [i for i in range(plan.num_tasks) if not (x[i] == 1).any()]
    assert plan.split_tasks == tuple(split) and len(split) >= 1
    compiled = Plan.from_json(plan.to_json()).compiled()  # recomputed from what plan.json stores
    direct = bit_scaling_round(plan.problem, x, plan.precision)
    assert compiled.assignment.tolist() == direct.assignment.tolist()
    assert compiled.placed_round.tolist() == direct.placed_round.tolist()
    lines = plan.explain().splitlines()
    header = lines.index(
        f"LP split {len(split)} of 9 tasks; compiler at p=8 (tasks split, left by round 1, or moved by the repair):"
    )
    rows = {line.split()[0]: line for line in lines[header + 2 :]}
    noted = {
        i for i in range(9) if i in split or direct.placed_round[i] != 1 or direct.assignment[i] != plan.assignment[i]
    }
    assert set(rows) == {plan.task_names[i] for i in noted}
    for i in noted:
        row, j = rows[plan.task_names[i]], direct.assignment[i]
        stage = {0: "unplaced", 9: "fallback"}.get(direct.placed_round[i], f"round {direct.placed_round[i]}")
        assert ", ".join(f"{plan.expert_names[k]} {x[i, k]:.3f}" for k in np.flatnonzero(x[i])) in row
        assert ("unplaced" if j < 0 else f"{plan.expert_names[j]} ({stage})") in row
        assert row.endswith(plan.expert_names[plan.assignment[i]])


def test_gemlab_plan_shows_a_saved_plan_and_refuses_options_it_would_ignore(load_run, tmp_path, capsys):
    path = load_run.run_dir.local_path / PLAN_FILE
    assert main(["plan", "--show", str(path)]) == 0
    assert capsys.readouterr().out.strip() == load_run.plan.explain()
    assert main(["plan", "--show", str(path), "--out", str(tmp_path / "copy.json")]) == 2
    assert "--show prints a saved plan; it takes no --out" in capsys.readouterr().err
    assert not (tmp_path / "copy.json").exists()
    assert main(["plan", "--show", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_without_the_repair_the_plan_is_the_compilers_rounding(load_run, tmp_path):
    problem = load_run.plan.problem
    x = solve_relaxation(problem).x
    rounded = {p: bit_scaling_round(problem, x, p).assignment.tolist() for p in (1, 8)}
    assert rounded[1] != rounded[8]
    for p in (1, 8):
        plan = make_plan(problem, "gem", StrategyOptions(precision=p, repair=False))
        assert plan.assignment.tolist() == rounded[p] and plan.details["repair"] is False and not plan.violations
    costs, loads = tmp_path / "costs.csv", tmp_path / "loads.json"
    save_cost_matrix(CostMatrix(problem.costs, problem.task_names, problem.expert_names), costs)
    loads.write_text(json.dumps(dict(zip(problem.task_names, problem.loads.tolist(), strict=True))))
    out = tmp_path / "plan.json"
    args = [str(costs), "--loads", str(loads), "--load-capacity", "1.75x", "--precision", "1", "--no-repair"]
    assert main(["plan", *args, "--out", str(out)]) == 0
    assert Plan.from_json(out.read_text()).assignment.tolist() == rounded[1]


# ----------------------------------------------------------------------- two precisions, two runs
@pytest.mark.ray
@pytest.mark.slow
def test_two_precisions_train_and_their_plans_differ_where_the_planner_says(ray_session, digits_dir, tmp_path):
    overrides = (*LOAD, "plan.repair=false", "trainer.max_steps=2", "trainer.num_workers=1")
    runs = {
        p: run_training(tiny(digits_dir, tmp_path, *overrides, f"plan.precision={p}"), lambda e: None) for p in (1, 8)
    }
    plans = {}
    for p, result in runs.items():
        assert [r["step"] for r in result.history] == [2]
        plans[p] = Plan.from_json((result.prepared.run_dir / PLAN_FILE).read_text())
        options = StrategyOptions(precision=p, repair=False, seed=0, time_limit=result.prepared.cfg.plan.time_limit)
        assert plans[p].to_json() == make_plan(plans[p].problem, "gem", options).to_json()
        assert result.prepared.table == tuple(plans[p].assignment.tolist())  # the map the run trained
    problem = plans[1].problem
    assert problem.loads.tolist() == runs[1].prepared.mixture.weights.tolist()  # the problem: p_d, 1.75 / 5
    assert problem.capacity.tolist() == pytest.approx([1.75 / 5] * 5)
    x = solve_relaxation(problem).x
    assert plans[1].split_tasks and np.array_equal(plans[1].fractional, plans[8].fractional)  # p does not touch x
    said = [bit_scaling_round(problem, x, p).assignment for p in (1, 8)]
    expected = {problem.task_names[i] for i in np.flatnonzero(said[0] != said[1])}
    trained = {problem.task_names[i] for i in np.flatnonzero(plans[1].assignment != plans[8].assignment)}
    assert expected == trained == {"rot15", "rot75"}  # the compiler's rounding is what trains
    # with the repair (the default) the rounded plans below the LP bound are re-solved: one map at both p
    repaired = [make_plan(problem, "gem", StrategyOptions(precision=p)).assignment for p in (1, 8)]
    assert repaired[0].tolist() == repaired[1].tolist()
