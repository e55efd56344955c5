"""Adapting a run trained on a real local Ray: the child trains the added domain from the parent's weights,
writes adaptability and forgetting, and leaves the parent as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gemlab.engine.api import write_run_results
from gemlab.engine.launch import run_training
from gemlab.results_schema import ADAPTABILITY, ALL_DOMAINS, FORGETTING
from helpers import tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_a_trained_run_adapted_to_one_more_domain(ray_session, digits_dir, tmp_path):
    parent = run_training(tiny(digits_dir, tmp_path, "trainer.max_steps=3"), lambda event: None)
    write_run_results(parent.prepared, parent.history)
    before = _digests(parent.prepared.run_dir.local_path)

    overrides = (f"adapt.parent={parent.prepared.run_dir}", "adapt.add=[noise]", "tag=adapted", "trainer.max_steps=3")
    child = run_training(tiny(digits_dir, tmp_path, *overrides), lambda event: None)
    plan = child.prepared.plan
    for domain, expert in parent.prepared.plan.mapping.items():
        assert plan.mapping[domain] == expert
    noise = child.prepared.mixture.names.index("noise")
    trained = [w for w in child.workers if noise in w["train_domains"]]
    assert [set(w["experts"]) for w in trained] == [{int(plan.assignment[noise])}]  # its expert's worker trains it
    assert all(w["start_step"] == 0 for w in child.workers)

    path = write_run_results(child.prepared, child.history).local_path
    rows = {(r["domain"], r["metric"]): r["value"] for r in pq.read_table(path).to_pylist() if r["step"] == 3}
    assert rows[("noise", ADAPTABILITY)] == rows[("noise", "accuracy")] == rows[(ALL_DOMAINS, ADAPTABILITY)]
    final = parent.history[-1]["domains"]
    for domain in parent.prepared.mixture.names:
        assert rows[(domain, FORGETTING)] == pytest.approx(final[domain]["accuracy"] - rows[(domain, "accuracy")])
    assert (ALL_DOMAINS, FORGETTING) in rows
    assert _digests(parent.prepared.run_dir.local_path) == before
