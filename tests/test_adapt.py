"""Adapting a trained run: the child's config and plan, its start from the parent's weights, the replay mixture,
adaptability and forgetting rows, and the report's table (the parents are trained in-process: no Ray here)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gemlab.data.errors import DataError
from gemlab.data.mixture import DomainMixture
from gemlab.engine.adapt import _grown, expert_sources, load_parent_weights
from gemlab.engine.checkpoint import CheckpointMismatch, write_checkpoint
from gemlab.engine.config import ConfigError, as_plain, compose_config, identity_digest
from gemlab.engine.data import build_mixture, replay_of
from gemlab.engine.forgetting import adaptation_metrics
from gemlab.engine.parallel import expert_parameters
from gemlab.engine.prepare import RUN_FILE, plan_fingerprint, prepare
from gemlab.engine.worker import Worker
from gemlab.report.adaptation import adaptation_table
from gemlab.report.figures import adaptation_tradeoff
from gemlab.report.results import load_results
from gemlab.results_schema import ADAPTABILITY, ALL_DOMAINS, FORGETTING
from helpers import tiny, tiny_overrides


def _trained_parent(digits_dir: Path, storage: Path, *overrides: str, steps: int = 2):
    """A tiny run trained for ``steps`` in this process and checkpointed as a Ray run would be; (prepared, worker)."""
    run = tiny(digits_dir, storage, *overrides)
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    for step in range(1, steps + 1):
        worker.step(step)
    scores = worker.evaluate()
    record = {
        "step": steps,
        "metric": "accuracy",
        "domains": {run.mixture.names[d]: result for d, result in scores.items()},
    }
    folder = run.run_dir.local_path / f"checkpoint-{steps:07d}"
    folder.mkdir()
    meta = {
        "plan_fingerprint": plan_fingerprint(run.plan),
        "num_experts": run.cfg.moe.num_experts,
        "identity_digest": identity_digest(run.cfg),
        "step": steps,
    }
    write_checkpoint(folder, worker.model, worker.optimizer, worker.role, meta, [record])
    return run, worker


def _child(digits_dir: Path, storage: Path, parent, *overrides: str):
    return prepare(compose_config(tiny_overrides(digits_dir, storage, f"adapt.parent={parent.run_dir}", *overrides)))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.slow
def test_a_child_keeps_the_old_domains_on_their_experts_and_starts_from_the_parent(digits_dir, tmp_path):
    parent, trained = _trained_parent(digits_dir, tmp_path / "parent")
    before = _digests(parent.run_dir.local_path)
    child = _child(digits_dir, tmp_path / "child", parent, "adapt.add=[noise]", "tag=adapted")
    assert list(child.cfg.data.domains) == ["rot0", "colour", "invert", "noise"]
    assert child.mixture.names == ("rot0", "colour", "invert-3shot", "noise")  # a few-shot view names itself
    for domain, expert in parent.plan.mapping.items():
        assert child.plan.mapping[domain] == expert  # every old domain on the expert it trained
    details = child.plan.details["adapt"]
    assert details["added"] == ["noise"] and details["kept_all"] and details["moved"] == []
    assert details["parent"] == parent.run_dir.uri and details["parent_step"] == 2
    assert np.allclose(child.plan.costs[:3], parent.plan.costs)  # the parent's anchors, refitted
    record = json.loads((child.run_dir.local_path / RUN_FILE).read_text())
    assert record["parent"] == {"run": parent.run_dir.uri, "checkpoint": "checkpoint-0000002", "step": 2}
    assert child.adaptation.sources == {0: 0, 1: 1} and child.adaptation.added == ("noise",)
    assert list(child.adaptation.parent_scores) == ["rot0", "colour", "invert-3shot"]

    worker = Worker(as_plain(child.cfg), child.plan, child.table, 0, 1)
    load_parent_weights(worker.model, Path(child.adaptation.checkpoint), child.adaptation.sources)
    now = worker.model.state_dict()
    for key, value in trained.model.state_dict().items():
        assert torch.equal(now[key], value), key
    assert _digests(parent.run_dir.local_path) == before  # the parent is only read


@pytest.mark.slow
def test_a_new_expert_copies_its_most_affine_old_expert_or_starts_as_drawn(digits_dir, tmp_path):
    parent, trained = _trained_parent(digits_dir, tmp_path / "parent")
    copied = _child(digits_dir, tmp_path / "copy", parent, "adapt.add=[noise]", "adapt.new_experts=1")
    assert copied.cfg.moe.num_experts == 3
    assert copied.plan.mapping["noise"] == "expert2"  # the new expert's anchor is the added domain's own
    source = copied.adaptation.sources[2]
    assert source in (0, 1)
    assert copied.plan.details["adapt"]["new_experts"] == {"expert2": f"expert{source}"}
    worker = Worker(as_plain(copied.cfg), copied.plan, copied.table, 0, 1)
    load_parent_weights(worker.model, Path(copied.adaptation.checkpoint), copied.adaptation.sources)
    experts, old = expert_parameters(worker.model), dict(expert_parameters(trained.model)[source])
    for (name, value), (old_name, _) in zip(experts[2], expert_parameters(trained.model)[source], strict=True):
        assert torch.equal(value, old[old_name]), name

    drawn = _child(
        digits_dir, tmp_path / "scratch", parent, "adapt.add=[noise]", "adapt.new_experts=1", "adapt.init=scratch"
    )
    assert drawn.adaptation.sources[2] is None
    fresh = Worker(as_plain(drawn.cfg), drawn.plan, drawn.table, 0, 1)
    initial = {name: value.clone() for name, value in expert_parameters(fresh.model)[2]}
    load_parent_weights(fresh.model, Path(drawn.adaptation.checkpoint), drawn.adaptation.sources)
    assert all(torch.equal(value, initial[name]) for name, value in expert_parameters(fresh.model)[2])


@pytest.mark.slow
def test_a_token_routed_child_grows_its_gate_and_keeps_the_parents_rows(digits_dir, tmp_path):
    parent, trained = _trained_parent(digits_dir, tmp_path / "parent", "router=topk")
    child = _child(
        digits_dir,
        tmp_path / "child",
        parent,
        "router=topk",
        "adapt.add=[noise]",
        "adapt.new_experts=1",
        "adapt.init=scratch",
    )
    assert child.plan is None and child.table is None
    worker = Worker(as_plain(child.cfg), child.plan, child.table, 0, 1)
    load_parent_weights(worker.model, Path(child.adaptation.checkpoint), child.adaptation.sources)
    grown = 0
    for key, old in trained.model.state_dict().items():
        new = worker.model.state_dict()[key]
        if new.shape != old.shape:
            grown += 1
            assert torch.equal(new.narrow(0, 0, old.shape[0]), old), key
        else:
            assert torch.equal(new, old), key
    assert grown > 0  # the gates route to one more expert
    with pytest.raises(ConfigError, match=r"adapt.init=copy: router=topk follows no plan"):
        _child(digits_dir, tmp_path / "copy", parent, "router=topk", "adapt.add=[noise]", "adapt.new_experts=1")


@pytest.mark.slow
def test_what_a_child_may_not_change_is_refused_by_name(digits_dir, tmp_path):
    parent, _ = _trained_parent(digits_dir, tmp_path / "parent")
    refusals = {
        ("adapt.add=[colour]",): r"adapt.add: \['colour'\] are domains of the parent",
        ("adapt.add=[noise]", "model.dim=48"): r"changed: model.dim: 32 -> 48",
        ("adapt.add=[noise]", "seed=1"): r"changed: .*seed: 0 -> 1",
        ("adapt.add=[noise]", "adapt.new_experts=2"): r"adapt.new_experts=2: more than the 1 added",
        ("adapt.add=[noise]", "data.domains=[rot0]"): r"data.domains=\['rot0'\]: an adapted run trains",
        ("adapt.add=[noise]", "moe.num_experts=5"): r"moe.num_experts=5: the parent has 2 experts",
        ("adapt.add=[noise]", f"trainer.init_from={tmp_path}"): r"trainer.init_from: an adapted run starts",
    }
    for overrides, message in refusals.items():
        with pytest.raises(ConfigError, match=message):
            _child(digits_dir, tmp_path / "child", parent, *overrides)
    # the added domain's shots and the trainer's keys may differ
    child = _child(
        digits_dir, tmp_path / "child", parent, "adapt.add=[noise]", "+data.shots.noise=5", "trainer.lr=0.001"
    )
    unshot = {**as_plain(child.cfg)["data"], "shots": None}
    assert child.mixture.domains[3].size < build_mixture(unshot, 0).domains[3].size
    assert child.adaptation.added == ("noise-5shot",)  # as the child evaluates it
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"adapt.parent=.*: no run.json there"):
        prepare(compose_config(tiny_overrides(digits_dir, tmp_path, f"adapt.parent={empty}", "adapt.add=[noise]")))
    grandchild_parent = _child(digits_dir, tmp_path / "child", parent, "adapt.add=[noise]")
    with pytest.raises(ConfigError, match="an adapted run itself"):
        _child(digits_dir, tmp_path / "grandchild", grandchild_parent, "adapt.add=[rot45]")


def test_adapt_keys_are_checked_before_anything_runs():
    for override, message in {
        "adapt.add=[noise]": "adapt.add needs adapt.parent",
        "adapt.new_experts=1": "adapt.new_experts needs adapt.parent",
        "adapt.replay=0.2": "adapt.replay needs adapt.parent",
        "adapt.init=warm": r"adapt.init='warm': expected one of \('copy', 'scratch'\)",
        "adapt.replay=1.0": r"adapt.replay=1.0: expected null or in \[0, 1\)",
        "adapt.new_experts=-1": "adapt.new_experts=-1: expected an integer >= 0",
        "adapt.add=[a,a]": "adapt.add=.*: expected a list of distinct domain names",
    }.items():
        with pytest.raises(ConfigError, match=message):
            compose_config([override])
    with pytest.raises(ConfigError, match=r"adapt.add=\[\]: expected at least one domain"):
        compose_config(["adapt.parent=runs/x"])


def test_replay_gives_the_added_domains_their_mass_and_zero_leaves_the_old_ones_unsampled(digits_dir):
    data = {"source": "digits", "path": str(digits_dir), "domains": ["rot0", "colour", "noise"], "shots": None}
    data |= {"alpha": 1.0, "image_size": 16, "holdout": None}
    plain = build_mixture(data, 0)
    replayed = build_mixture(data, 0, replay=replay_of({"parent": "p", "add": ["noise"], "replay": 0.2}))
    assert replayed.weights[2] == pytest.approx(0.8)
    assert replayed.weights[:2] == pytest.approx(0.2 * plain.weights[:2] / plain.weights[:2].sum())
    only_new = build_mixture(data, 0, replay=(["noise"], 0.0))
    assert only_new.untrained == (0, 1) and only_new.weights[2] == 1.0
    assert replay_of({"parent": "p", "add": ["noise"], "replay": None}) is None
    with pytest.raises(ConfigError, match=r"adapt.add: \['svhn'\] are not among the run's domains"):
        build_mixture(data, 0, replay=(["svhn"], 0.5))
    shot = build_mixture({**data, "shots": {"noise": 5}}, 0, replay=(["noise"], 0.0))  # named by its view
    assert shot.names[2] == "noise-5shot" and shot.untrained == (0, 1)
    with pytest.raises(DataError, match=r"added domain\(s\) \['svhn'\] are not among"):
        DomainMixture(plain.domains, replay=(["svhn"], 0.5))


def test_adaptability_and_forgetting_are_the_new_scores_and_the_old_drops():
    record = {
        "metric": "accuracy",
        "domains": {"a": {"accuracy": 0.7}, "b": {"accuracy": 0.9}, "c": {"accuracy": 0.4}},
        "adaptation": {"parent_scores": {"a": 0.8, "b": 0.85}, "added": ["c"]},
    }
    rows = {(d, m): v for d, m, v in adaptation_metrics(record)}
    assert rows == pytest.approx(
        {
            ("c", ADAPTABILITY): 0.4,
            (ALL_DOMAINS, ADAPTABILITY): 0.4,
            ("a", FORGETTING): 0.1,
            ("b", FORGETTING): -0.05,  # an old domain that improved
            (ALL_DOMAINS, FORGETTING): 0.025,
        }
    )
    assert adaptation_metrics({"metric": "accuracy", "domains": record["domains"]}) == []


def test_a_grown_tensor_keeps_the_saved_values_in_its_leading_part():
    current, saved = torch.zeros(3, 2), torch.ones(2, 2)
    assert torch.equal(_grown(current, saved, "gate"), torch.tensor([[1.0, 1], [1, 1], [0, 0]]))
    with pytest.raises(CheckpointMismatch, match=r"gate has shape \(2, 2\), the adapted model \(2, 3, 1\)"):
        _grown(torch.zeros(2, 3, 1), saved, "gate")
    with pytest.raises(CheckpointMismatch, match="shrunk"):
        _grown(torch.zeros(1, 2), saved, "shrunk")


def test_a_new_expert_copies_the_old_expert_whose_anchor_is_closest():
    anchors = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [1.0, 0.2]])
    assert expert_sources(anchors, 2, "copy") == {2: 1, 3: 0}
    assert expert_sources(anchors, 2, "scratch") == {2: None, 3: None}


def test_the_report_tabulates_adaptability_and_forgetting_per_method(tmp_path):
    rows = []
    for router, forgetting in (("gem", 0.01), ("topk", 0.2)):
        for seed in (0, 1):
            run = f"{router}-{seed}"
            base = {"run": run, "tag": "t", "router": router, "strategy": None, "precision": None}
            base |= {"num_experts": 2, "seed": seed, "step": 6}
            for domain, metric, value in (
                ("rot0", "accuracy", 0.8),
                ("noise", "accuracy", 0.5 + seed / 10),
                (ALL_DOMAINS, "accuracy", 0.65),
                ("noise", ADAPTABILITY, 0.5 + seed / 10),
                (ALL_DOMAINS, ADAPTABILITY, 0.5 + seed / 10),
                ("rot0", FORGETTING, forgetting),
                (ALL_DOMAINS, FORGETTING, forgetting),
            ):
                rows.append({**base, "domain": domain, "metric": metric, "value": value})
    path = tmp_path / "results.parquet"
    pd.DataFrame(rows).to_parquet(path)
    frame = load_results([str(path)], None)
    table = adaptation_table(frame)
    assert table.columns == [ADAPTABILITY, FORGETTING, "noise (new)", "rot0 (forgot)"]
    cells = dict(table.rows)
    assert cells["gem"][ADAPTABILITY] == pytest.approx((0.55, 0.05, 2))
    assert cells["topk"][FORGETTING] == pytest.approx((0.2, 0.0, 2))
    (figure,) = adaptation_tradeoff(frame)  # Fig. 11: one point per method
    figure.save(tmp_path / figure.file_name)
    assert figure.file_name == "adaptation.png" and (tmp_path / "adaptation.png").stat().st_size > 0
    assert adaptation_tradeoff(frame[frame["metric"] != FORGETTING]) == []
