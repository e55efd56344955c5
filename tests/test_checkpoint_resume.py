"""Checkpoints verify against the sizes and digests saved with them; a damaged one is skipped, never loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gemlab.cli import main
from gemlab.engine.checkpoint import CheckpointDamaged, read_checkpoint, write_checkpoint
from gemlab.engine.config import as_plain
from gemlab.engine.resume import NoUsableCheckpoint, checkpoint_name, find_resume_point, verified_step
from gemlab.engine.worker import Worker
from helpers import tiny, tiny_overrides

META = {"plan_fingerprint": "p", "num_experts": 2, "identity_digest": "i"}


@pytest.fixture(scope="module")
def saved_run(digits_dir, tmp_path_factory):
    """A run folder with real checkpoints at steps 3 and 6 (one worker), and a worker to load them into."""
    storage = tmp_path_factory.mktemp("runs")
    run = tiny(digits_dir, storage)
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    for step in (3, 6):
        folder = run.run_dir.local_path / checkpoint_name(step, frozenset())
        folder.mkdir()
        worker.step(step)
        write_checkpoint(folder, worker.model, worker.optimizer, worker.role, {**META, "step": step}, [{"step": step}])
    return run, worker


@pytest.fixture
def run_dir(saved_run, tmp_path):
    """A fresh copy of the saved run folder, to damage."""
    import shutil

    from gemlab.storage import Location

    copy = tmp_path / "run"
    shutil.copytree(saved_run[0].run_dir.local_path, copy)
    return Location.parse(copy)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _drop_digests(path: Path) -> None:
    meta = json.loads(path.read_text())
    del meta["files"]
    path.write_text(json.dumps(meta))


def _forget_an_expert(path: Path) -> None:
    meta = json.loads(path.read_text())
    del meta["files"]["expert-0001.pt"]
    path.write_text(json.dumps(meta))


DAMAGE = [
    ("truncated expert shard", "expert-0001.pt", _truncate, "expert-0001.pt: "),
    ("empty shared weights", "shared.pt", lambda p: p.write_bytes(b""), "shared.pt: 0 bytes"),
    ("invalid JSON meta", "meta.json", lambda p: p.write_text("{not json"), "meta.json: not valid JSON"),
    ("meta without digests", "meta.json", _drop_digests, "meta.json: records no step"),
    ("meta forgetting a shard", "meta.json", _forget_an_expert, "records no digest of ['expert-0001.pt']"),
    ("same size, other bytes", "expert-0000.pt", _flip_last_byte, "expert-0000.pt: its SHA-256 differs"),
    ("a missing shard", "expert-0000.pt", Path.unlink, "expert-0000.pt: missing"),
    ("missing meta", "meta.json", Path.unlink, "meta.json: missing"),
    ("history cut short", "history.json", _truncate, "history.json: "),
    ("meta as a list", "meta.json", lambda p: p.write_text("[]"), "meta.json: records no step"),
]


@pytest.mark.parametrize(("name", "file", "damage", "message"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_latest_checkpoint_is_skipped_for_the_previous_one(run_dir, name, file, damage, message):
    assert find_resume_point(run_dir).step == 6
    damage(run_dir.local_path / "checkpoint-0000006" / file)
    point = find_resume_point(run_dir)
    assert (point.folder.name, point.step) == ("checkpoint-0000003", 3)
    assert len(point.skipped) == 1 and message in point.skipped[0] and "checkpoint-0000006" in point.skipped[0]
    (warning,) = point.warnings()
    assert warning.endswith("continuing from checkpoint-0000003 (step 3)") and message in warning
    point.require_usable()
    assert checkpoint_name(6, point.taken) == "checkpoint-0000006-1"  # the damaged folder keeps its name


def test_when_every_checkpoint_is_damaged_the_run_stops_naming_each(run_dir):
    for step in (3, 6):
        _truncate(run_dir.local_path / f"checkpoint-{step:07d}" / "expert-0001.pt")
    point = find_resume_point(run_dir)
    assert point.folder is None and len(point.skipped) == 2
    with pytest.raises(NoUsableCheckpoint, match=r"no usable checkpoint: .*checkpoint-0000006/expert-0001.pt"):
        point.require_usable()


def test_a_run_without_checkpoints_starts_from_scratch(tmp_path):
    from gemlab.storage import Location

    point = find_resume_point(Location.parse(tmp_path))
    assert (point.folder, point.step, point.skipped) == (None, 0, ())
    point.require_usable()


def test_only_checkpoints_ray_registered_are_candidates(run_dir):
    snapshot = {"checkpoint_results": [{"checkpoint_dir_name": "checkpoint-0000003"}]}
    (run_dir / "checkpoint_manager_snapshot.json").write_text(json.dumps(snapshot))
    point = find_resume_point(run_dir)
    assert point.step == 3 and point.skipped == ()  # an unregistered upload is not a damaged checkpoint
    assert checkpoint_name(6, point.taken) == "checkpoint-0000006-1"  # but its name is taken


def test_new_names_avoid_every_taken_one_and_keep_step_order():
    taken = frozenset({"checkpoint-0000030", "checkpoint-0000030-1"})
    assert checkpoint_name(30, taken) == "checkpoint-0000030-2"
    assert checkpoint_name(40, taken) == "checkpoint-0000040"
    assert sorted(["checkpoint-0000031", "checkpoint-0000030-2", "checkpoint-0000030"]) == [
        "checkpoint-0000030", "checkpoint-0000030-2", "checkpoint-0000031",
    ]  # fmt: skip


@pytest.mark.slow
def test_meta_lists_the_files_of_every_rank(saved_run, tmp_path):
    """Rank 0 writes the records that all ranks gathered: here two ranks' shards written in turn."""
    run, _ = saved_run
    workers = [Worker(as_plain(run.cfg), run.plan, run.table, r, 2) for r in range(2)]
    folder = tmp_path / "checkpoint-0000001"
    folder.mkdir()
    gathered: list[dict] = []
    write_checkpoint(
        folder,
        workers[1].model,
        workers[1].optimizer,
        workers[1].role,
        {**META, "step": 1},
        [],
        lambda v: gathered.append(v) or [v],
    )
    write_checkpoint(
        folder,
        workers[0].model,
        workers[0].optimizer,
        workers[0].role,
        {**META, "step": 1},
        [],
        lambda v: [v, *gathered],
    )
    files = json.loads((folder / "meta.json").read_text())["files"]
    assert sorted(files) == ["expert-0000.pt", "expert-0001.pt", "history.json", "shared.pt"]
    from gemlab.storage import Location

    assert verified_step(Location.parse(folder)) == 1


def test_a_shard_that_will_not_load_is_named_not_an_eof_error(run_dir, saved_run):
    _, worker = saved_run
    folder = run_dir.local_path / "checkpoint-0000006"
    (folder / "shared.pt").write_bytes(b"")
    with pytest.raises(CheckpointDamaged, match=r"shared.pt: not a loadable checkpoint shard"):
        read_checkpoint(folder, worker.model, None, META)


@pytest.mark.slow
def test_gemlab_train_refuses_a_run_whose_checkpoints_are_all_damaged(digits_dir, tmp_path, capsys):
    overrides = tiny_overrides(digits_dir, tmp_path)
    run = tiny(digits_dir, tmp_path)
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    folder = run.run_dir.local_path / "checkpoint-0000003"
    folder.mkdir()
    write_checkpoint(folder, worker.model, worker.optimizer, worker.role, {**META, "step": 3}, [{"step": 3}])
    (folder / "meta.json").write_text("{")
    assert main(["train", *overrides]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "damaged checkpoint skipped" in err and "none is usable" in err
    assert err.strip().splitlines()[-1].startswith("gemlab train: error: no usable checkpoint: ")
