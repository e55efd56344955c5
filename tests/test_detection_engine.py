"""Detection through the engine: the task's batches and evaluation, every router in the detector, a Ray run."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from gemlab.engine.config import ConfigError, as_plain, compose_config
from gemlab.engine.data import build_mixture
from gemlab.engine.launch import run_training
from gemlab.engine.model import build_model, checkpointed_experts, method_label, needs_plan
from gemlab.engine.outputs import write_results
from gemlab.engine.prepare import prepare
from gemlab.engine.tasks import task_of
from gemlab.engine.tasks.detection import DetectionImages, letterbox
from gemlab.engine.worker import Worker
from gemlab.moe.registry import ROUTERS
from helpers import tiny_detection_overrides

# Routers whose layers need what a detector's queries do not carry (metadata columns, a class loss of their own).
CLASSIFICATION_ONLY = {"metadata", "confidence"}


def _config(synth_uodb_dir, tmp_path, *overrides: str):
    return compose_config(tiny_detection_overrides(synth_uodb_dir, tmp_path, *overrides))


def test_letterbox_keeps_the_aspect_and_pads_right_and_below():
    image = torch.full((3, 20, 40), 200, dtype=torch.uint8)
    canvas, factor = letterbox(image, 64)
    assert factor == 64 / 40 and canvas.shape == (3, 64, 64)
    assert bool((canvas[:, :32, :] > 0).all()) and bool((canvas[:, 32:, :] == 0).all())


def test_batches_hold_canvas_boxes_masks_and_each_domains_classes(synth_uodb_dir):
    cfg = compose_config(tiny_detection_overrides(synth_uodb_dir, "unused"))
    mixture = build_mixture(cfg.data, cfg.seed)
    data = DetectionImages(mixture, 64)
    batch = data.batch([(0, 0), (2, 1)], "val")
    targets, mask = batch["targets"], batch["mask"]
    assert batch["images"].shape == (2, 3, 64, 64) and mask.shape == (2, 64, 64) and not bool(mask.any())
    for d, (domain_id, index) in enumerate([(0, 0), (2, 1)]):
        sample = mixture.domains[domain_id].split("val")[index]
        x, y, w, h = sample.boxes[0]
        expected = torch.tensor([x + w / 2, y + h / 2, w, h]) / sample.width  # square images: the canvas is the image
        assert torch.allclose(targets.boxes[d][0], expected, atol=1e-5)
        own = set(mixture.labels.local_to_global[domain_id].values())
        assert set(torch.nonzero(targets.valid_classes[d]).flatten().tolist()) == own
        assert set(targets.labels[d].tolist()) <= own


def test_a_flipped_training_image_carries_its_boxes_along(synth_uodb_dir):
    cfg = compose_config(tiny_detection_overrides(synth_uodb_dir, "unused"))
    data = DetectionImages(build_mixture(cfg.data, cfg.seed), 64)
    plain = data.batch([(0, 0)], "val")
    torch.manual_seed(0)
    flips = [data.batch([(0, 0)], "train") for _ in range(8)]  # the train split's image 0, flipped about half the time
    original = data.split(0, "train").boxes[0]
    mirrored = original.clone()
    mirrored[:, 0] = 1 - mirrored[:, 0]
    seen = {"same" if torch.allclose(b["targets"].boxes[0], original) else "mirrored" for b in flips}
    assert seen == {"same", "mirrored"} and plain["images"].shape[0] == 1
    flipped = next(b for b in flips if not torch.allclose(b["targets"].boxes[0], original))
    assert torch.allclose(flipped["targets"].boxes[0], mirrored)
    unflipped = next(b for b in flips if torch.allclose(b["targets"].boxes[0], original))
    assert torch.equal(flipped["images"][0], unflipped["images"][0].flip(-1))


def test_a_classifier_on_detection_data_is_refused_by_name(synth_uodb_dir, tmp_path):
    data = ["data.source=collection", f"data.path={synth_uodb_dir}", "data.image_size=64"]
    cfg = compose_config(["experiment=uodb_mini", "model=vit", *data, f"storage_path={tmp_path}"])
    with pytest.raises(ConfigError, match="model=vit is a classification model, but the data's domains are detection"):
        prepare(cfg)


def test_the_dense_detector_follows_no_plan_and_is_recorded_as_dense(synth_uodb_dir, tmp_path):
    cfg = _config(synth_uodb_dir, tmp_path, "model=dino")
    assert not needs_plan(cfg) and method_label(cfg) == "dense"
    # its checkpoints hold no expert shard, whatever moe.num_experts says (else none of them would verify)
    assert cfg.moe.num_experts == 2 and checkpointed_experts(cfg) == 0
    assert checkpointed_experts(_config(synth_uodb_dir, tmp_path, "model=gem_dino")) == 2
    prepared = prepare(cfg)
    assert prepared.plan is None and prepared.table is None


@pytest.mark.parametrize("router", sorted(set(ROUTERS) - CLASSIFICATION_ONLY))
def test_every_router_builds_and_takes_a_step_in_the_detector(synth_uodb_dir, tmp_path, router):
    prepared = prepare(_config(synth_uodb_dir, tmp_path, f"router={router}"))
    worker = Worker(as_plain(prepared.cfg), prepared.plan, prepared.table, 0, 1)
    before = [p.detach().clone() for p in worker.model.parameters()]
    stats = worker.step(1)
    assert torch.isfinite(torch.tensor(stats["loss"])) and {"loss/class", "loss/box", "loss/giou"} <= set(stats)
    assert any(not torch.equal(a, b) for a, b in zip(before, worker.model.parameters(), strict=True))
    results = worker.evaluate()
    assert set(results) == set(worker.role.eval_domains)
    assert all(0 <= r["ap"] <= 1 and 0 <= r["ap50"] <= 1 for r in results.values())


@pytest.mark.parametrize("router", sorted(CLASSIFICATION_ONLY))
def test_routers_made_for_classifiers_are_refused_with_a_reason(synth_uodb_dir, tmp_path, router):
    with pytest.raises(ConfigError, match=f"router={router}"):
        prepare(_config(synth_uodb_dir, tmp_path, f"router={router}"))


def test_the_task_is_the_domains_task(synth_uodb_dir, digits_dir):
    detection = build_mixture(compose_config(tiny_detection_overrides(synth_uodb_dir, "x")).data, 0)
    assert task_of(detection).metric == "ap"
    digits = compose_config(["experiment=tiny", f"data.path={digits_dir}"])
    assert task_of(build_mixture(digits.data, 0)).metric == "accuracy"


def test_gemgr_holds_only_its_experts_queries_and_the_full_model_all(synth_uodb_dir, tmp_path):
    prepared = prepare(_config(synth_uodb_dir, tmp_path, "model=gemgr_dino"))
    full = build_model(as_plain(prepared.cfg), prepared.mixture, prepared.plan)
    worker = Worker(as_plain(prepared.cfg), prepared.plan, prepared.table, 0, 2)
    names = {n for n, _ in worker.model.named_parameters()}
    assert worker.role.local_experts == (0,)
    assert any(".members.0." in n for n in names) and not any(".members.1." in n for n in names)
    assert any(".members.1." in n for n, _ in full.named_parameters())


@pytest.mark.ray
@pytest.mark.slow
def test_a_two_worker_gem_dino_run_checkpoints_resumes_on_one_worker_and_writes_ap(
    ray_session, synth_uodb_dir, tmp_path
):
    first = run_training(prepare(_config(synth_uodb_dir, tmp_path, "trainer.max_steps=2")), lambda event: None)
    assert [w["experts"] for w in sorted(first.workers, key=lambda w: w["rank"])] == [[0], [1]]
    events: list[dict] = []
    second = run_training(
        prepare(_config(synth_uodb_dir, tmp_path, "trainer.max_steps=4", "trainer.num_workers=1")), events.append
    )
    (worker,) = second.workers
    assert worker["start_step"] == 2 and worker["experts"] == [0, 1]
    assert [r["step"] for r in second.history] == [2, 4] and second.history[-1]["metric"] == "ap"
    evaluation = next(e for e in events if e["event"] == "eval")
    assert set(evaluation["previews"]) == {"faces", "clipart", "medical"}  # TensorBoard's images, one per domain
    assert all(image.dtype == torch.uint8 and image.shape == (3, 64, 64) for image in evaluation["previews"].values())
    run = second.prepared
    table = pq.read_table(write_results(run.run_dir, run.cfg, run.name, second.history).path).to_pylist()
    ap = {(r["domain"], r["step"]): r["value"] for r in table if r["metric"] == "ap"}
    assert set(ap) == {(d, s) for d in ("faces", "clipart", "medical", "all") for s in (2, 4)}
    assert all(0 <= v <= 1 for v in ap.values())
    assert {r["metric"] for r in table} >= {"ap50", "ap75", "ap_small", "ap_medium", "ap_large", "expert_load/1"}
