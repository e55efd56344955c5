"""``gemlab eval``: a run's newest verified checkpoint, evaluated as the worker evaluates it, or through one expert.

The runs here are trained without Ray: a worker of a one-worker group takes a
few steps and writes real checkpoints, as the train loop would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gemlab.cli import main
from gemlab.engine.checkpoint import write_checkpoint
from gemlab.engine.config import as_plain, compose_config, identity, identity_digest
from gemlab.engine.cross_expert import cross_expert_accuracy
from gemlab.engine.evaluation_command import run_config
from gemlab.engine.prepare import RUN_FILE, plan_fingerprint, prepare
from gemlab.engine.resume import checkpoint_name, find_resume_point
from gemlab.engine.worker import Worker
from gemlab.results_schema import COLUMNS
from gemlab.storage import Location
from helpers import tiny


def _checkpointed(run, steps: int, every: int) -> dict[str, dict]:
    """Train ``run`` for ``steps`` on one worker, checkpointing every ``every`` steps; the worker's evaluation."""
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    meta = {
        "plan_fingerprint": plan_fingerprint(run.plan),
        "num_experts": run.cfg.moe.num_experts,
        "identity_digest": identity_digest(run.cfg),
    }
    for step in range(1, steps + 1):
        worker.step(step)
        if step % every == 0:
            folder = run.run_dir.local_path / checkpoint_name(step, frozenset())
            folder.mkdir()
            write_checkpoint(folder, worker.model, worker.optimizer, worker.role, {**meta, "step": step}, [])
    return {run.mixture.names[d]: result for d, result in worker.evaluate().items()}


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    """A tiny GEM run checkpointed at steps 3 and 6 by one worker, and that worker's own evaluation at step 6."""
    run = tiny(digits_dir, tmp_path_factory.mktemp("runs"))
    return run, _checkpointed(run, 6, 3)


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A copy of the trained run's folder, to damage or to write into."""
    return Path(shutil.copytree(trained[0].run_dir.local_path, tmp_path / "run"))


def _frame(path: Path):
    return pq.read_table(path).to_pandas()


def _values(frame, metric: str) -> dict[str, float]:
    rows = frame[frame.metric == metric]
    return dict(zip(rows.domain, rows.value, strict=True))


def test_eval_prints_and_writes_what_the_worker_evaluates(trained, tmp_path, capsys):
    run, own = trained
    out = tmp_path / "eval.parquet"
    assert main(["eval", str(run.run_dir.local_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{run.name}: step 6 (checkpoint-0000006), val split, routed as trained" in printed
    assert "| domain | accuracy | loss |" in printed
    for name, result in own.items():
        assert f"| {name} | {result['accuracy']:.4f} | {result['loss']:.4f} |" in printed
    frame = _frame(out)
    assert list(frame.columns) == [c.name for c in COLUMNS]
    assert set(frame.run) == {run.name} and set(frame.step) == {6} and set(frame.router) == {"gem"}
    accuracy, loss = _values(frame, "accuracy"), _values(frame, "loss")
    for name, result in own.items():
        assert accuracy[name] == result["accuracy"]
        assert loss[name] == pytest.approx(result["loss"], rel=1e-6)
        assert list(_values(frame, f"expert_load/{j}")[name] for j in range(2)) == pytest.approx(result["expert_load"])
    mean = sum(r["accuracy"] for r in own.values()) / len(own)
    assert accuracy["all"] == pytest.approx(mean)
    assert f"| **mean** | {mean:.4f} |" in printed
    assert f"wrote {out}" in printed


def test_force_expert_gives_the_cross_expert_row_and_its_own_default_file(trained, run_copy, capsys):
    run, _ = trained
    matrix = cross_expert_accuracy(run.cfg, run.run_dir, find_resume_point(run.run_dir).folder)
    assert main(["eval", str(run_copy), "--force-expert", "1", "--batch-size", "7"]) == 0
    assert "val split, every domain through expert 1" in capsys.readouterr().out
    frame = _frame(run_copy / "eval-val-expert1.parquet")
    accuracy = _values(frame, "accuracy")
    assert {name: accuracy[name] for name in matrix} == {name: row[1] for name, row in matrix.items()}
    assert all(_values(frame, "expert_load/1")[name] == 1.0 for name in matrix)


@pytest.fixture(scope="module")
def topk_run(digits_dir, tmp_path_factory) -> Path:
    """A top-k run's folder (prepared: no plan, no checkpoint)."""
    return tiny(digits_dir, tmp_path_factory.mktemp("topk"), "router=topk").run_dir.local_path


def _no_checkpoint(run: Path, tmp: Path) -> list[str]:
    for folder in run.glob("checkpoint-*"):
        shutil.rmtree(folder)
    return [str(run)]


def _none_verifies(run: Path, tmp: Path) -> list[str]:
    for folder in run.glob("checkpoint-*"):
        (folder / "shared.pt").write_bytes(b"")
    return [str(run)]


def _damaged_record(run: Path, tmp: Path) -> list[str]:
    (run / RUN_FILE).write_text('{"identity')
    return [str(run)]


def _edited_record(run: Path, tmp: Path) -> list[str]:
    record = json.loads((run / RUN_FILE).read_text())
    record["identity"]["moe"]["num_experts"] = 3
    (run / RUN_FILE).write_text(json.dumps(record))
    return [str(run)]


ERRORS = [
    ("not a run folder", lambda run, tmp: [str(tmp)], "{tmp}: not a run folder (no run.json"),
    ("no such folder", lambda run, tmp: [str(tmp / "nothing")], "{tmp}/nothing: not a run folder (no such folder)"),
    ("no checkpoint", _no_checkpoint, "{run}: no checkpoint to evaluate"),
    ("none verifies", _none_verifies, "{run}: no checkpoint verifies, so there is nothing to evaluate: "),
    ("damaged run.json", _damaged_record, "{run}/run.json: not valid JSON"),
    ("edited run.json", _edited_record, "{run}/run.json: its identity is not the one its identity_digest records"),
    ("expert out of range", lambda run, tmp: [str(run), "--force-expert", "2"], "--force-expert 2: run run has "),
    ("negative expert", lambda run, tmp: [str(run), "--force-expert", "-1"], "experts 0..1"),
    ("unknown split", lambda run, tmp: [str(run), "--split", "nosuch"], "--split nosuch: domain 'rot0' has no such"),
    ("split not a name", lambda run, tmp: [str(run), "--split", "../x"], "--split '../x': not a split name"),
    ("out is a folder", lambda run, tmp: [str(run), "--out", str(tmp)], "{tmp}: is a folder; give a file name"),
]


@pytest.mark.parametrize(("name", "arguments", "fragment"), ERRORS, ids=[e[0] for e in ERRORS])
def test_eval_refuses_in_one_line_and_writes_nothing(run_copy, tmp_path, capsys, name, arguments, fragment):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out" / "eval.parquet"
    argv = arguments(run_copy, empty)
    before = sorted(p.name for p in run_copy.iterdir())
    assert main(["eval", *argv, *([] if "--out" in argv else ["--out", str(out)])]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gemlab eval: error: "), captured.err
    assert fragment.format(run=run_copy, tmp=empty) in lines[0]
    assert captured.out == ""
    assert not out.parent.exists() and sorted(p.name for p in run_copy.iterdir()) == before


def test_a_router_without_a_table_cannot_be_forced(topk_run, tmp_path, capsys):
    out = tmp_path / "eval.parquet"
    assert main(["eval", str(topk_run), "--force-expert", "0", "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"gemlab eval: error: --force-expert 0: run {topk_run.name}'s router topk has no domain")
    assert "\n" not in line and not out.exists()


def test_a_newer_damaged_checkpoint_is_skipped_with_a_warning(run_copy, capsys):
    (run_copy / "checkpoint-0000006" / "meta.json").write_text("{")
    assert main(["eval", str(run_copy), "--split", "calib"]) == 0
    captured = capsys.readouterr()
    assert "step 3 (checkpoint-0000003), calib split" in captured.out
    assert "damaged checkpoint skipped" in captured.err and "checkpoint-0000006/meta.json" in captured.err
    frame = _frame(run_copy / "eval-calib.parquet")  # another split, another default file
    assert set(frame.step) == {3} and set(frame.domain) == {"rot0", "colour", "invert-3shot", "all"}


def test_a_run_stored_in_an_object_store_is_evaluated_there(run_copy, s3_uri, capsys):
    store = Location.parse(s3_uri) / "run"
    store.upload(run_copy)
    assert main(["eval", store.uri]) == 0
    table = pq.read_table(store.path + "/eval-val.parquet", filesystem=store.filesystem)
    assert set(table.column("domain").to_pylist()) == {"rot0", "colour", "invert-3shot", "all"}
    assert json.loads((store / RUN_FILE).read_text())["plan_fingerprint"] is not None
    assert "***@" in capsys.readouterr().out  # the credentials in the URI are masked where it is printed


CONFIGS = [
    ["experiment=tiny"],
    ["model=resnet", "router=topk", "moe.num_experts=3"],
    ["experiment=quickstart", "router=class_gem", "seed=4"],
    ["experiment=uodb_tiny", "router=damex"],
]


@pytest.mark.parametrize("overrides", CONFIGS, ids=[" ".join(c) for c in CONFIGS])
def test_the_config_rebuilt_from_run_json_is_the_runs(tmp_path, overrides):
    """Keys the run did not record take their defaults; a model or router of another choice keeps only its keys."""
    cfg = compose_config([*overrides, "trainer.num_workers=3", "name=custom"])
    record = {"identity": identity(cfg), "identity_digest": identity_digest(cfg), "plan_fingerprint": None}
    (tmp_path / RUN_FILE).write_text(json.dumps(record))
    rebuilt, _ = run_config(Location.parse(tmp_path))
    assert identity(rebuilt) == identity(cfg) and identity_digest(rebuilt) == record["identity_digest"]
    assert rebuilt.trainer.num_workers == 2 and rebuilt.name is None  # not the run's identity: the defaults


@pytest.mark.slow
def test_a_detection_run_is_evaluated_in_coco_ap(synth_uodb_dir, tmp_path, capsys):
    """experiment=uodb_tiny on the session's small synth-uodb (about 4 s); AP as the worker's own evaluation."""
    overrides = ["experiment=uodb_tiny", f"data.path={synth_uodb_dir}", f"storage_path={tmp_path}"]
    run = prepare(compose_config(overrides))
    own = _checkpointed(run, 1, 1)
    assert main(["eval", str(run.run_dir.local_path)]) == 0
    assert "| domain | ap | ap50 | ap75 | ap_small | ap_medium | ap_large |" in capsys.readouterr().out
    frame = _frame(run.run_dir.local_path / "eval-val.parquet")
    assert set(frame.domain) == {*own, "all"} and set(frame.step) == {1}
    for metric in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"):
        values = _values(frame, metric)
        assert {name: values[name] for name in own} == pytest.approx(
            {name: result[metric] for name, result in own.items()}, nan_ok=True
        )
