"""Search spaces: grids, seeded random draws, DomainBed's per-name streams, overrides, sweep configs."""

from __future__ import annotations

import math

import pytest

from gemlab.engine.config import DEFAULT_CONFIG_DIR, ConfigError, compose_config
from gemlab.tune.command import leaderboard, trial_status
from gemlab.tune.space import SpaceError, expand, override
from gemlab.tune.sweep import SweepSpec, check_trials, sweep_name


def test_grid_is_the_cartesian_product_in_key_order_repeated():
    trials = expand({"b": [1, 2], "a": ["x", "y"]}, "grid", 2, 0)
    assert trials[:4] == [{"a": "x", "b": 1}, {"a": "x", "b": 2}, {"a": "y", "b": 1}, {"a": "y", "b": 2}]
    assert trials[4:] == trials[:4]


def test_random_draws_are_seeded_and_within_their_distributions():
    space = {"lr": {"loguniform": [1e-4, 1e-2]}, "k": {"randint": [1, 3]}, "w": {"uniform": [0.0, 0.5]}, "r": ["a"]}
    trials = expand(space, "random", 50, 7)
    assert trials == expand(space, "random", 50, 7) and trials != expand(space, "random", 50, 8)
    assert all(1e-4 <= t["lr"] <= 1e-2 and t["k"] in (1, 2, 3) and 0 <= t["w"] <= 0.5 for t in trials)
    assert {t["k"] for t in trials} == {1, 2, 3}
    logs = [math.log10(t["lr"]) for t in trials]  # log-uniform: both decades drawn
    assert min(logs) < -3 < max(logs)


def test_domainbed_draws_do_not_move_when_a_key_is_added():
    space = {"lr": {"loguniform": [1e-4, 1e-2]}, "wd": {"uniform": [0.0, 0.1]}}
    before = expand(space, "domainbed", 5, 0)
    after = expand({**space, "dropout": [0.0, 0.1, 0.5]}, "domainbed", 5, 0)
    assert [{k: t[k] for k in space} for t in after] == before
    plain_before = expand(space, "random", 5, 0)
    plain_after = expand({**space, "aaa": [0.0, 0.1, 0.5]}, "random", 5, 0)
    assert [{k: t[k] for k in space} for t in plain_after] != plain_before  # the reason for domainbed


@pytest.mark.parametrize(
    ("space", "search", "named"),
    [
        ({}, "grid", "no keys"),
        ({"a": []}, "grid", "space.a"),
        ({"a": {"normal": [0, 1]}}, "random", "space.a"),
        ({"a": {"uniform": [1, 0]}}, "random", "low <= high"),
        ({"a": {"loguniform": [0, 1]}}, "random", "low > 0"),
        ({"a": {"uniform": [0, 1]}}, "grid", "distributions"),
        ({"a": [1]}, "bayes", "bayes"),
    ],
)
def test_bad_spaces_name_the_key(space, search, named):
    with pytest.raises(SpaceError, match=named):
        expand(space, search, 1, 0)


def test_overrides_keep_types():
    assert override("router", "topk") == "router=topk"
    assert override("trainer.lr", 1e-05) == "trainer.lr=1e-05"
    assert override("plan.precision", 8) == "plan.precision=8"
    assert override("name", "a b") == "name='a b'"
    assert compose_config([override("trainer.lr", 3e-06)]).trainer.lr == 3e-06


@pytest.mark.slow
def test_every_shipped_sweep_composes_and_expands():
    names = sorted(p.stem for p in (DEFAULT_CONFIG_DIR / "sweep").glob("*.yaml"))
    assert {"smoke", "lambda_topk", "strategies", "routers", "domainbed_random"} <= set(names)
    for name in names:
        cfg = compose_config([f"sweep={name}"])
        spec = SweepSpec.from_config(cfg)
        check_trials(spec, [f"sweep={name}"], None)
        assert spec.trials() and sweep_name(cfg, spec).startswith(f"sweep-{cfg.tag}-")


def test_a_sweep_needs_a_sweep_and_valid_trials():
    with pytest.raises(ConfigError, match="sweep=<name>"):
        SweepSpec.from_config(compose_config([]))
    with pytest.raises(ConfigError, match=r"trainer\.nope"):
        check_trials(SweepSpec.from_config(compose_config(["sweep=smoke"])), ["sweep=smoke", "trainer.nope=1"], None)
    with pytest.raises(ConfigError, match=r"sweep\.mode"):
        SweepSpec.from_config(compose_config(["sweep=smoke", "sweep.mode=best"]))


def test_leaderboard_words_say_how_each_trial_ended():
    assert trial_status("TERMINATED", 60, 60) == "finished"
    assert trial_status("TERMINATED", 15, 60) == "stopped at 15"  # the scheduler stopped it
    assert trial_status("RUNNING", 30, 60) == "interrupted"  # the sweep was interrupted around it
    assert trial_status("PENDING", 0, 60) == "interrupted"
    assert trial_status("ERROR", 15, 60) == "failed"
    rows = [
        {"trial": "trial-000", "value": 0.2, "step": 60, "status": "finished", "params": {"trainer.lr": 0.01}},
        {"trial": "trial-001", "value": 0.9, "step": 30, "status": "interrupted", "params": {"trainer.lr": 0.1}},
    ]
    table = leaderboard(rows, "accuracy", "max").splitlines()
    assert table[2] == "| 1 | trial-001 | 0.9000 | 30 | interrupted | trainer.lr=0.1 |"
    assert table[3].startswith("| 2 | trial-000 | 0.2000 | 60 | finished |")
