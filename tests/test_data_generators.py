"""Generated domains: synth-uodb, digits and few-shot views."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gemlab.data.collection import load_collection
from gemlab.data.digits import DOMAINS, SITE_SCATTER_DEGREES, SITES, generate_digits
from gemlab.data.errors import DataError
from gemlab.data.fewshot import few_shot
from gemlab.data.synth.uodb import SYNTH_UODB, generate_synth_uodb, split_sizes

SCALE = 0.04


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "uodb"
    generate_synth_uodb(out, seed=0, image_size=64, scale=SCALE, workers=2)
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "d"
    generate_digits(out, seed=0, image_size=16)
    return out


def test_synth_uodb_loads_as_a_mixture_of_at_least_eight_detection_domains(synth):
    mixture, skipped = load_collection(synth)
    assert skipped == []
    assert len(mixture.domains) >= 8 and all(d.task == "detection" for d in mixture.domains)
    for domain, spec in zip(mixture.domains, SYNTH_UODB, strict=True):
        assert {s: len(domain.split(s)) for s in ("train", "val", "calib")} == split_sizes(spec, SCALE)
        for sample in domain.split("train"):
            for x, y, w, h in sample.boxes:
                assert x >= 0 and y >= 0 and w >= 2 and h >= 2 and x + w <= 64 and y + h <= 64
    names = [set(d.category_names.values()) for d in mixture.domains]
    shared = set.intersection(names[0], names[1])
    assert shared == {"car", "plane", "ship"}  # the domain-shift pair
    assert any(not (n & (set.union(*names) - n)) for n in names)  # some label spaces share nothing


def test_full_scale_sizes_are_imbalanced_at_least_fifty_to_one():
    train = [spec.sizes[0] for spec in SYNTH_UODB]
    assert max(train) / min(train) >= 50
    assert 2_500 <= sum(sum(spec.sizes) for spec in SYNTH_UODB) <= 3_500


def test_ground_truth_as_predictions_scores_ap_one(synth):
    annotations = synth / "photo" / "annotations" / "train.json"
    truth = COCO(str(annotations))
    detections = [{**a, "score": 1.0} for a in json.loads(annotations.read_text())["annotations"]]
    evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_label_mismatch_pair_draws_the_other_domains_objects_unannotated(synth):
    mixture, _ = load_collection(synth)
    for name, other in (("driving", "traffic"), ("traffic", "driving")):
        domain = mixture.domains[mixture.index(name)]
        other_labels = set(mixture.domains[mixture.index(other)].category_names.values())
        assert not set(domain.category_names.values()) & other_labels
        hidden = [(s, box) for s in domain.split("train") for box in json.loads(s.metadata["unannotated_boxes"])]
        assert hidden, f"{name} has no unannotated objects"
        for sample, (x, y, w, h) in hidden:
            pixels = np.asarray(Image.open(sample.path).convert("RGB"), dtype=np.float64)
            region = pixels[int(y) : int(y + h), int(x) : int(x + w)]
            # Something was drawn there: the region is not the plain road or sky around it.
            assert region.std(axis=(0, 1)).max() > 20


def test_generation_is_byte_identical_for_any_worker_count(tmp_path, synth):
    again = tmp_path / "again"
    generate_synth_uodb(again, seed=0, image_size=64, scale=SCALE, workers=1)
    files = sorted(p.relative_to(synth) for p in synth.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in files:
        assert (synth / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_generators_refuse_a_non_empty_folder_and_leave_nothing_behind(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="busy: exists and is not empty"):
        generate_synth_uodb(tmp_path / "busy", scale=SCALE)
    with pytest.raises(DataError, match="image_size >= 32"):
        generate_synth_uodb(tmp_path / "new", image_size=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_digits_domains_are_real_digits_in_every_split(digits):
    mixture, _ = load_collection(digits)
    assert mixture.names == tuple(DOMAINS)
    from sklearn.datasets import load_digits

    originals = load_digits()
    for domain in mixture.domains:
        assert [c.name for c in domain.categories] == [str(d) for d in range(10)]
        for split in ("train", "val", "calib"):
            assert {s.label for s in domain.split(split)} == set(range(10))
        assert sum(len(domain.split(s)) for s in ("train", "val", "calib")) == len(originals.target)
    rot0 = mixture.domains[0].split("train")[:20]
    for sample in rot0:
        index = int(sample.path.stem)
        assert sample.label == originals.target[index]
        small = np.asarray(Image.open(sample.path).convert("L").resize((8, 8), Image.Resampling.BOX), dtype=float)
        assert np.corrcoef(small.ravel(), originals.images[index].ravel())[0, 1] > 0.9


@pytest.mark.slow
def test_digits_generation_is_deterministic(tmp_path, digits):
    again = tmp_path / "again"
    generate_digits(again, seed=0, image_size=16)
    for path in [*list(digits.rglob("*.png"))[::97], *digits.rglob("metadata.csv")]:
        assert path.read_bytes() == (again / path.relative_to(digits)).read_bytes()


def test_digits_images_carry_their_domain_site_as_metadata(digits):
    mixture, _ = load_collection(digits)
    for domain in mixture.domains:
        assert domain.metadata_columns == ("lat", "lon")
        for split in ("train", "val"):
            locations = np.array([[float(s.metadata["lat"]), float(s.metadata["lon"])] for s in domain.split(split)])
            assert np.abs(locations - SITES[domain.name]).max() < 5 * SITE_SCATTER_DEGREES
            assert locations.std(axis=0).min() > 0.5 * SITE_SCATTER_DEGREES  # scattered, not one point


def test_few_shot_classification_takes_exactly_k_per_class(digits):
    mixture, _ = load_collection(digits)
    view = few_shot(mixture.domains[0], shots=5, seed=1)
    labels = [s.label for s in view.split("train")]
    assert view.name == "rot0-5shot" and all(labels.count(d) == 5 for d in range(10)) and len(labels) == 50
    assert view.split("val") == mixture.domains[0].split("val")
    assert few_shot(mixture.domains[0], shots=5, seed=1).split("train") == view.split("train")
    assert few_shot(mixture.domains[0], shots=5, seed=2).split("train") != view.split("train")


def test_few_shot_detection_has_at_least_k_instances_per_category(synth):
    mixture, _ = load_collection(synth)
    photo = mixture.domains[0]
    view = few_shot(photo, shots=2, seed=0)
    counts = {c.id: sum(s.category_ids.count(c.id) for s in view.split("train")) for c in photo.categories}
    assert min(counts.values()) >= 2
    assert len(view.split("train")) < len(photo.split("train"))


def test_few_shot_errors_name_the_short_category(synth):
    mixture, _ = load_collection(synth)
    with pytest.raises(DataError, match="shots must be >= 1"):
        few_shot(mixture.domains[0], shots=0, seed=0)
    faces = mixture.domains[mixture.index("faces")]
    with pytest.raises(DataError, match=r"fewer than 1000 instances of \['face'\]"):
        few_shot(faces, shots=1000, seed=0)
