"""The experiment config: composition, errors that name the override, run names, every shipped config."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemlab.engine.command import _baseline_overrides
from gemlab.engine.config import DEFAULT_CONFIG_DIR, ConfigError, compose_config, run_name, worker_range


def test_overrides_reach_the_config():
    cfg = compose_config(["experiment=quickstart", "router=topk", "moe.num_experts=3", "trainer.num_workers=2"])
    assert (cfg.tag, cfg.router.name, cfg.router.k, cfg.moe.num_experts) == ("quickstart", "topk", 1, 3)
    assert cfg.data.domains[0] == "rot0" and cfg.baselines == ["topk"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["experiment=nope"], "experiment/nope"),
        (["router=nope"], "router/nope"),
        (["moe.nope=3"], "moe.nope"),
        (["trainer.num_workers=0"], "trainer.num_workers"),
        (["trainer.num_workers=[2,1]"], "trainer.num_workers"),
        (["trainer.max_steps=0"], "trainer.max_steps"),
        (["resume=maybe"], "resume"),
        (["name=../escape"], "name"),
        (["testing.fail_once_at_step=999"], "testing.fail_once_at_step"),
    ],
)
def test_bad_overrides_name_what_is_wrong(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("[", r"\[")):
        compose_config(overrides)


def test_run_name_ignores_how_the_run_is_executed_but_not_what_it_trains():
    base = run_name(compose_config(["experiment=quickstart"]))
    assert base.startswith("quickstart-gem-")
    same = ["trainer.num_workers=[1,2]", "trainer.max_steps=900", "trainer.max_failures=3", "storage_path=/x"]
    assert run_name(compose_config(["experiment=quickstart", *same])) == base
    for changed in ("moe.num_experts=2", "seed=1", "plan.precision=4", "trainer.lr=0.1"):
        assert run_name(compose_config(["experiment=quickstart", changed])) != base
    assert run_name(compose_config(["experiment=quickstart", "name=mine"])) == "mine"


def test_worker_range_fixed_and_elastic():
    assert worker_range(compose_config(["trainer.num_workers=3"])) == (3, 3)
    assert worker_range(compose_config(["trainer.num_workers=[1,4]"])) == (1, 4)


def test_baselines_drop_the_main_routers_options():
    overrides = ["experiment=quickstart", "router=relu", "router.k=2", "moe.num_experts=4"]
    assert _baseline_overrides(overrides, "topk") == [
        "experiment=quickstart",
        "moe.num_experts=4",
        "router=topk",
        "baselines=[]",
    ]


def test_a_config_dir_without_config_yaml_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match=str(tmp_path)):
        compose_config([], tmp_path)


@pytest.mark.parametrize("group", ["router", "experiment"])
def test_every_shipped_config_composes(group):
    names = sorted(p.stem for p in (DEFAULT_CONFIG_DIR / group).glob("*.yaml"))
    assert names
    for name in names:
        cfg = compose_config([f"{group}={name}"])
        assert cfg[group].name == name if group == "router" else cfg.tag
