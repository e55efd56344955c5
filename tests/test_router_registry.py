"""The router registry: every router it lists is configured, deterministic, trains, is swept; no name leaks.

The parametrisation comes from the registry itself, so a new router module is
checked here without editing this file.
"""

from __future__ import annotations

import ast
import importlib
import math
import pkgutil
from pathlib import Path

import pytest
import torch
import yaml

from gemlab.engine.checkpoint import write_checkpoint
from gemlab.engine.config import DEFAULT_CONFIG_DIR, as_plain, compose_config, identity_digest
from gemlab.engine.cross_expert import cross_expert_accuracy, forced_expert
from gemlab.engine.prepare import plan_fingerprint
from gemlab.engine.worker import Worker
from gemlab.models.vit import MoEViT
from gemlab.moe import routers
from gemlab.moe.layer import MoELayer
from gemlab.moe.registry import ROUTERS, MoELayers, router_spec
from gemlab.moe.spec import RunFacts
from gemlab.storage import Location
from helpers import RoundRobinPlan, tiny

NAMES = sorted(ROUTERS)
PACKAGE = Path(routers.__file__).parents[2]  # platform/gemlab
DIM, HIDDEN = 12, 16


def _facts(name: str) -> tuple[RunFacts, dict]:
    """Run facts for three domains and three classes, and the router's options from its shipped config."""
    cfg = compose_config([f"router={name}"])
    num_experts, tasks = cfg.moe.num_experts, 3  # three domains, or three classes for a class-level plan
    facts = RunFacts(
        num_experts=num_experts,
        num_domains=3,
        class_counts=(50, 20, 5),
        metadata_columns={"a": ("lat", "lon"), "b": ("lat", "lon"), "c": ("lat", "lon")},
        plan=RoundRobinPlan(tasks, num_experts),
        capacity=2,
        seed=0,
    )
    return facts, ROUTERS[name].router_options(cfg.router)


def test_every_router_module_declares_one_spec():
    modules = sorted(m.name for m in pkgutil.iter_modules(routers.__path__))
    declared = {importlib.import_module(f"{routers.__name__}.{m}").SPEC.name: m for m in modules}
    assert sorted(declared) == NAMES and len(modules) == len(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_router_has_its_config_file(name):
    assert (DEFAULT_CONFIG_DIR / "router" / f"{name}.yaml").is_file()
    cfg = compose_config([f"router={name}"])
    spec = ROUTERS[name]
    assert cfg.router.name == name
    assert spec.plan_level is None or cfg.plan.level == spec.plan_level  # a planned router's file sets its level


def test_the_shipped_routers_sweep_lists_every_router():
    sweep = yaml.safe_load((DEFAULT_CONFIG_DIR / "sweep" / "routers.yaml").read_text())
    listed = sweep["sweep"]["space"]["router"]
    assert sorted(listed) == NAMES and len(listed) == len(set(listed))


@pytest.mark.parametrize("name", [n for n in NAMES if ROUTERS[n].build is not None])  # head routers: their tests
def test_every_router_is_deterministic_under_a_seed(name):
    facts, options = _facts(name)
    spec = ROUTERS[name]
    side = {
        "domain": torch.tensor([0, 1, 2]),
        "labels": torch.tensor([0, 2, 1]),
        "metadata": torch.tensor([[10.0, 20.0], [30.0, -40.0], [0.0, 0.0]]),
    }

    def run() -> torch.Tensor:
        torch.manual_seed(7)
        layer = MoELayers(spec, facts, options)(DIM, HIDDEN).eval()
        assert (layer.shared_expert is not None) == spec.shared_expert
        return layer(torch.randn(3, 5, DIM), **side)[0]

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_router_trains_and_evaluates_in_one_loop(digits_dir, tmp_path, name):
    run = tiny(digits_dir, tmp_path, f"router={name}")
    spec = router_spec(name)
    assert (run.table is not None) == spec.expert_parallel and (run.plan is not None) == (spec.plan_level is not None)
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    before = {k: v.clone() for k, v in worker.model.state_dict().items()}
    losses = [worker.step(step)["loss"] for step in range(1, 4)]
    assert all(math.isfinite(loss) for loss in losses)
    assert any(not torch.equal(v, before[k]) for k, v in worker.model.state_dict().items())
    results = worker.evaluate()
    assert sorted(results) == [0, 1, 2]
    for result in results.values():
        assert 0 <= result["accuracy"] <= 1 and math.isclose(sum(result["expert_load"]), 1.0)


def _tables(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.router.table for m in model.modules() if isinstance(m, MoELayer)]


@pytest.mark.parametrize("name", [n for n in NAMES if ROUTERS[n].expert_parallel])
def test_forcing_an_expert_restores_every_router_even_on_error(name):
    facts, options = _facts(name)
    torch.manual_seed(0)
    model = MoEViT(num_classes=3, moe=MoELayers(ROUTERS[name], facts, options), image_size=8, dim=DIM, depth=4)
    tables = [table.clone() for table in _tables(model)]
    assert len(tables) == 2  # blocks 1 and 3
    with pytest.raises(RuntimeError, match="inside"), forced_expert(model, 1):
        assert all(table.eq(1).all() for table in _tables(model))
        raise RuntimeError("raised inside")
    assert all(torch.equal(a, b) for a, b in zip(_tables(model), tables, strict=True))
    with pytest.raises(ValueError, match="cannot force expert 9"), forced_expert(model, 9):
        pass
    assert all(torch.equal(a, b) for a, b in zip(_tables(model), tables, strict=True))


@pytest.mark.slow
def test_the_cross_expert_matrix_follows_the_spec(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path)
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    worker.step(1)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    meta = {
        "plan_fingerprint": plan_fingerprint(run.plan),
        "num_experts": run.cfg.moe.num_experts,
        "identity_digest": identity_digest(run.cfg),
        "step": 1,
    }
    write_checkpoint(folder, worker.model, worker.optimizer, worker.role, meta, [{"step": 1}])
    matrix = cross_expert_accuracy(run.cfg, run.run_dir, Location.parse(folder))
    evaluated = worker.evaluate()
    for domain, name in enumerate(run.mixture.names):  # the plan's own expert gives the run's accuracy
        assert matrix[name][run.table[domain]] == pytest.approx(evaluated[domain]["accuracy"])
    topk = tiny(digits_dir, tmp_path, "router=topk")
    assert cross_expert_accuracy(topk.cfg, topk.run_dir, Location.parse(folder)) is None


# Words that are router names but mean something else where they are written: planner strategies
# (gem, random), a random search, a sample's metadata field; and two places that do mean the router:
# the training benchmark, which compares gem with topk by design, and the strategy-ablation table,
# which takes the gem runs.
OTHER_MEANINGS = {
    "bench/broadcast.py": {"gem"},
    "bench/plan.py": {"gem"},
    "bench/train.py": {"gem", "topk"},
    "data/coco.py": {"metadata"},
    "data/coco_writer.py": {"metadata"},
    "data/synth/uodb.py": {"metadata"},
    "engine/tasks/classification.py": {"metadata"},
    "engine/tasks/detection.py": {"metadata"},
    "engine/outputs.py": {"gem"},
    "plan/command.py": {"gem"},
    "plan/incremental.py": {"gem"},
    "plan/planner.py": {"gem"},
    "plan/strategies.py": {"gem", "random"},
    "report/results.py": {"gem"},
    "report/tables.py": {"gem", "random"},
    "tune/space.py": {"random"},
}


def _string_literals(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_router_name_is_written_outside_its_own_module():
    """The package's code never branches on a router's name: only the router's module names it.

    Configs and tests choose routers by name; docstrings may name them as examples.
    """
    own = {(ROUTERS[name].build or ROUTERS[name].head).__module__: name for name in NAMES}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        module = "gemlab." + relative.removesuffix(".py").replace("/", ".")
        allowed = OTHER_MEANINGS.get(relative, set()) | {own.get(module)}
        for node in _string_literals(ast.parse(path.read_text(), str(path))):
            if node.value in ROUTERS and node.value not in allowed:
                found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert not found, "router names outside their modules:\n" + "\n".join(found)
