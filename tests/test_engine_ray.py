"""Training on a real local Ray: results, plan broadcast, failures, elastic reruns, resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gemlab.cli import main
from gemlab.engine.checkpoint import read_history
from gemlab.engine.config import ConfigError
from gemlab.engine.launch import run_training
from gemlab.engine.outputs import write_results
from gemlab.engine.prepare import RUN_FILE, plan_fingerprint
from gemlab.engine.resume import find_resume_point
from helpers import tiny, tiny_overrides

pytestmark = pytest.mark.ray


def train(digits_dir: Path, storage: Path, *overrides: str):
    """Prepare and fit one run of the tiny experiment; returns (result, events seen by the driver)."""
    prepared = tiny(digits_dir, storage, *overrides)
    events: list[dict] = []
    return run_training(prepared, events.append), events


def test_a_gem_run_trains_reports_and_writes_its_results(ray_session, digits_dir, tmp_path):
    result, events = train(digits_dir, tmp_path)
    run = result.prepared
    assert [r["step"] for r in result.history] == [3, 6]
    assert [e["step"] for e in events if e["event"] == "eval"] == [3, 6]
    # every worker read the very plan the driver put in the object store
    starts = result.workers
    assert sorted(w["rank"] for w in starts) == [0, 1] and all(w["start_step"] == 0 for w in starts)
    assert {w["plan_sha256"] for w in starts} == {__import__("hashlib").sha256(run.plan.to_json().encode()).hexdigest()}
    assert sorted(e for w in starts for e in w["experts"]) == [0, 1]  # one expert per worker, none twice
    assert result.history[-1]["allreduce_bytes_per_step"] > 0
    table = pq.read_table(write_results(run.run_dir, run.cfg, run.name, result.history).path).to_pylist()
    accuracy = [r for r in table if r["metric"] == "accuracy" and r["domain"] == "rot0"]
    assert [r["step"] for r in accuracy] == [3, 6] and 0 <= accuracy[-1]["value"] <= 1
    assert {(r["router"], r["strategy"], r["precision"], r["num_experts"], r["seed"]) for r in table} == {
        ("gem", "gem", 8, 2, 0)
    }
    local = run.run_dir.local_path
    assert (local / "plan.json").is_file() and (local / RUN_FILE).is_file()
    checkpoints = sorted(p.name for p in local.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-0000003", "checkpoint-0000006"]
    shards = sorted(p.name for p in (local / checkpoints[-1]).iterdir())
    assert {"shared.pt", "expert-0000.pt", "expert-0001.pt", "meta.json", "history.json"} <= set(shards)


def test_a_worker_that_dies_once_is_restarted_from_the_last_checkpoint(ray_session, digits_dir, tmp_path):
    result, _ = train(digits_dir, tmp_path, "testing.fail_once_at_step=5", "trainer.max_failures=1")
    assert (result.prepared.run_dir / ".failed-once-at-5").exists()
    assert [r["step"] for r in result.history] == [3, 6]
    # the group started twice: from scratch, then from the step-3 checkpoint
    assert sorted(w["start_step"] for w in result.workers) == [0, 0, 3, 3]


def test_a_run_saved_on_two_workers_continues_on_one_with_experts_replaced(ray_session, digits_dir, tmp_path):
    first, _ = train(digits_dir, tmp_path, "trainer.max_steps=3")
    second, _ = train(digits_dir, tmp_path, "trainer.max_steps=6", "trainer.num_workers=1")
    assert second.prepared.run_dir == first.prepared.run_dir
    (worker,) = second.workers
    assert worker["start_step"] == 3 and worker["experts"] == [0, 1]
    assert [r["step"] for r in second.history] == [3, 6]


def test_an_elastic_range_runs(ray_session, digits_dir, tmp_path):
    result, _ = train(digits_dir, tmp_path, "trainer.num_workers=[1,2]", "trainer.max_steps=3")
    assert [r["step"] for r in result.history] == [3] and 1 <= len(result.workers) <= 2


@pytest.mark.parametrize(("num_experts", "workers"), [(4, 2), (4, 4), (2, 4)])
def test_more_workers_than_experts_and_one_per_expert(ray_session, digits_dir, tmp_path, num_experts, workers):
    result, _ = train(
        digits_dir,
        tmp_path,
        f"moe.num_experts={num_experts}",
        f"trainer.num_workers={workers}",
        "trainer.max_steps=3",
        "data.domains=[rot0,rot30,colour,noise,invert]",
    )
    held = sorted(tuple(w["experts"]) for w in result.workers)
    assert len(held) == workers and {e for h in held for e in h} == set(range(num_experts))
    if num_experts < workers:  # replica groups: each worker holds one expert, some experts twice
        assert all(len(h) == 1 for h in held) and len(set(held)) == num_experts
    assert set(result.history[-1]["domains"]) == set(result.prepared.mixture.names)


def test_rerunning_a_finished_run_continues_it_and_a_changed_plan_is_refused(ray_session, digits_dir, tmp_path):
    first, _ = train(digits_dir, tmp_path, "trainer.max_steps=3")
    again, _ = train(digits_dir, tmp_path, "trainer.max_steps=3")
    assert [w["start_step"] for w in again.workers] == [3, 3] and [r["step"] for r in again.history] == [3]
    record = first.prepared.run_dir / RUN_FILE
    saved = json.loads(record.read_text())
    assert saved["plan_fingerprint"] == plan_fingerprint(first.prepared.plan)
    record.write_text(json.dumps({**saved, "plan_fingerprint": "another plan"}))
    with pytest.raises(ConfigError, match="another plan"):
        train(digits_dir, tmp_path, "trainer.max_steps=3")
    with pytest.raises(ConfigError, match="resume=never"):
        train(digits_dir, tmp_path, "resume=never")
    with pytest.raises(ConfigError, match=r"moe\.num_experts"):
        train(digits_dir, tmp_path, f"name={first.prepared.name}", "moe.num_experts=3")


def test_more_workers_than_cpus_is_refused_before_any_worker_starts(ray_session, digits_dir, tmp_path):
    with pytest.raises(ConfigError, match="needs 8 CPUs"):
        train(digits_dir, tmp_path, "trainer.num_workers=8")


def test_a_damaged_checkpoint_is_skipped_and_a_restart_says_where_it_continues(
    ray_session, digits_dir, tmp_path, capsys
):
    """The driver and every worker continue from the newest checkpoint that verifies; each restart is one line."""
    first, _ = train(digits_dir, tmp_path)
    local = first.prepared.run_dir.local_path
    shard = local / "checkpoint-0000006" / "expert-0001.pt"
    shard.write_bytes(shard.read_bytes()[:100])  # a copy cut short
    overrides = tiny_overrides(digits_dir, tmp_path, "trainer.max_steps=9")
    assert main(["train", *overrides, "testing.fail_once_at_step=8", "trainer.max_failures=1"]) == 0
    out, err = capsys.readouterr()
    assert f"damaged checkpoint skipped: {shard}: 100 bytes" in err
    assert "continuing from checkpoint-0000003 (step 3)" in err
    assert "9 steps, continuing from step 3 (checkpoint-0000003)" in out
    assert "the worker group restarted (a worker failed, or nodes joined or left); " in out
    assert "continuing from the checkpoint of step 6" in out
    # the new step-6 checkpoint took another name than the damaged one; both that and step 3 aged out since
    assert sorted(p.name for p in local.glob("checkpoint-*")) == ["checkpoint-0000006-1", "checkpoint-0000009"]
    resume = find_resume_point(first.prepared.run_dir)
    assert resume.folder.name == "checkpoint-0000009" and resume.skipped == ()
    assert [r["step"] for r in read_history(resume.folder)] == [3, 6, 9]
