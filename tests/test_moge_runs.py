"""MoGE's evaluation switches on a trained run: MoGE-SE (`gemlab eval --shared-expert-only`) and the forced-expert
matrix, and the classification metrics a run's evaluation carries."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from gemlab.cli import main
from gemlab.engine.checkpoint import write_checkpoint
from gemlab.engine.config import as_plain, identity_digest
from gemlab.engine.cross_expert import cross_expert_accuracy
from gemlab.engine.prepare import plan_fingerprint
from gemlab.engine.resume import checkpoint_name, find_resume_point
from gemlab.engine.worker import Worker
from helpers import tiny


@pytest.fixture(scope="module")
def moge_run(digits_dir, tmp_path_factory):
    """A tiny MoGE run (three experts, top-2, a shared expert) trained 3 steps and checkpointed; its evaluation."""
    run = tiny(digits_dir, tmp_path_factory.mktemp("moge"), "router=metadata", "moe.num_experts=3")
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    for step in range(1, 4):
        worker.step(step)
    folder = run.run_dir.local_path / checkpoint_name(3, frozenset())
    folder.mkdir()
    meta = {
        "plan_fingerprint": plan_fingerprint(run.plan),
        "num_experts": 3,
        "identity_digest": identity_digest(run.cfg),
        "step": 3,
    }
    write_checkpoint(folder, worker.model, worker.optimizer, worker.role, meta, [])
    return run, {run.mixture.names[d]: result for d, result in worker.evaluate().items()}


def _values(path, metric: str) -> dict[str, float]:
    frame = pq.read_table(path).to_pandas()
    rows = frame[frame.metric == metric]
    return dict(zip(rows.domain, rows.value, strict=True))


@pytest.mark.slow
def test_a_run_evaluates_macro_f1_and_shot_groups(moge_run):
    _, results = moge_run
    for result in results.values():
        assert {"accuracy", "loss", "macro_f1", "many_shot_accuracy", "few_shot_accuracy"} <= set(result)
        assert 0 <= result["macro_f1"] <= 1


@pytest.mark.slow
def test_shared_expert_only_and_forced_experts_from_the_command_line(moge_run, capsys):
    run, own = moge_run
    folder = run.run_dir.local_path
    assert main(["eval", str(folder), "--shared-expert-only"]) == 0
    printed = capsys.readouterr().out
    assert "val split, the shared expert alone (MoGE-SE)" in printed and "worst_group_accuracy: " in printed
    shared = _values(folder / "eval-val-shared.parquet", "accuracy")
    assert set(shared) == {*own, "all"}
    assert shared["all"] != pytest.approx(sum(r["accuracy"] for r in own.values()) / len(own))  # not the routed run
    matrix = cross_expert_accuracy(run.cfg, run.run_dir, find_resume_point(run.run_dir).folder)
    assert sorted(matrix) == sorted(own) and all(len(row) == 3 for row in matrix.values())
    assert main(["eval", str(folder), "--force-expert", "1"]) == 0
    forced = _values(folder / "eval-val-expert1.parquet", "accuracy")
    assert {name: forced[name] for name in matrix} == {name: row[1] for name, row in matrix.items()}
    capsys.readouterr()
    assert main(["eval", str(folder), "--force-expert", "1", "--shared-expert-only"]) == 2
    assert "choose one" in capsys.readouterr().err


def test_a_router_without_a_shared_expert_is_refused(digits_dir, tmp_path, capsys):
    run = tiny(digits_dir, tmp_path, "router=topk")
    assert main(["eval", str(run.run_dir.local_path), "--shared-expert-only"]) == 2
    assert "router topk has no shared expert to use alone" in capsys.readouterr().err
