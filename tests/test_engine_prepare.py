"""The driver's checks before Ray starts: bad data, storage, backbone files; plan, run folder, CLI exits."""

from __future__ import annotations

import json

import pytest
import torch

from gemlab.cli import main
from gemlab.engine.checkpoint import write_checkpoint
from gemlab.engine.config import ConfigError, as_plain
from gemlab.engine.prepare import PLAN_FILE, RUN_FILE
from gemlab.engine.worker import Worker
from gemlab.plan.plan import Plan
from helpers import tiny


def test_prepare_writes_the_plan_and_the_run_record(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path)
    assert run.run_dir.local_path == tmp_path / run.name and run.cfg.data.path == str(digits_dir)
    assert Plan.load(run.run_dir.local_path / PLAN_FILE).assignment.tolist() == list(run.table)
    record = json.loads((run.run_dir / RUN_FILE).read_text())
    assert record["identity"]["moe"]["num_experts"] == 2 and "num_workers" not in record["identity"]["trainer"]
    again = tiny(digits_dir, tmp_path)  # same inputs: the same plan, byte for byte
    assert again.plan.to_json() == run.plan.to_json()


def test_topk_needs_no_plan_and_trains_data_parallel(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path, "router=topk")
    assert run.plan is None and run.table is None and not (run.run_dir / PLAN_FILE).exists()


def test_more_experts_than_domains_anchor_on_samples(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path, "moe.num_experts=5", "plan.capacity=1")
    assert len(set(run.table)) == 3 and run.plan.num_experts == 5


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["data.domains=[rot0,nowhere]"], "nowhere"),
        (["+data.shots.rot90=3"], "rot90"),
        (["data.shots={invert: 500}"], "fewer than 500"),
        (["data.source=collection", "data.path=/nonexistent/data"], "/nonexistent/data"),
        (["plan.strategy=clairvoyant"], "clairvoyant"),
        (["plan.capacity=1"], "capacity"),
        (["router=topk", "router.k=5"], "k must be"),
        (["router=class_gem", "plan.level=domain"], "plan.level=class"),  # its file sets class; domain is refused
        (["affinity.backbone=/nonexistent/weights.pt"], "/nonexistent/weights.pt"),
    ],
)
def test_bad_input_is_refused_before_ray_naming_the_culprit(digits_dir, tmp_path, overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("[", r"\[")):
        tiny(digits_dir, tmp_path, *overrides)


def test_an_unwritable_storage_path_is_named(digits_dir, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ConfigError, match="storage_path"):
        tiny(digits_dir, blocked / "runs")


def test_a_backbone_file_of_another_model_is_refused(digits_dir, tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"patches.weight": torch.zeros(7, 3, 4, 4)}, other)  # another dim and patch size
    with pytest.raises(ConfigError, match="does not fit"):
        tiny(digits_dir, tmp_path, f"affinity.backbone={other}")
    unrelated = tmp_path / "unrelated.pt"
    torch.save({"encoder.layer": torch.zeros(2)}, unrelated)
    with pytest.raises(ConfigError, match="holds no weights"):
        tiny(digits_dir, tmp_path, f"affinity.backbone={unrelated}")


@pytest.mark.slow
def test_a_trained_stem_can_be_the_affinity_backbone(digits_dir, tmp_path):
    run = tiny(digits_dir, tmp_path)
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    meta = {"plan_fingerprint": "p", "num_experts": 2, "identity_digest": "i", "step": 0}
    write_checkpoint(folder, worker.model, worker.optimizer, worker.role, meta, [])
    planned = tiny(digits_dir, tmp_path / "other", f"affinity.backbone={folder / 'shared.pt'}")
    assert planned.plan.assignment.tolist() == run.plan.assignment.tolist()  # the same (initial) stem


def test_gemlab_train_exits_2_with_the_error_on_bad_input(capsys):
    assert main(["train", "experiment=quickstart", "moe.bogus=1"]) == 2
    assert "moe.bogus" in capsys.readouterr().err
    assert main(["train", "router=nope"]) == 2
    assert "router/nope" in capsys.readouterr().err
