"""Crowd annotations (``iscrowd: 1``) through the data layer: kept apart from the boxes, written back, checked."""

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from gemlab.data.coco import read_coco_split
from gemlab.data.coco_writer import coco_dict, write_coco
from gemlab.data.collection import load_collection
from gemlab.data.dataset import load_sample
from gemlab.data.domain import Domain
from gemlab.data.errors import DataError
from gemlab.data.records import Category, Sample
from gemlab.evaluation.coco import ground_truth

CATEGORIES = (Category(1, "person"), Category(2, "car"))


def _image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (20, 120, 60)).save(path)
    return path


def _samples(images: Path) -> tuple[Sample, ...]:
    return (
        Sample(
            _image(images / "a.png", 40, 30),
            40,
            30,
            1,
            ((1.0, 1.0, 5.0, 5.0),),
            (2,),
            crowd_boxes=((10.0, 0.0, 30.0, 30.0), (0.0, 20.0, 8.0, 10.0)),
            crowd_category_ids=(1, 2),
        ),
        Sample(
            _image(images / "b.png", 20, 20), 20, 20, 2, crowd_boxes=((0.0, 0.0, 20.0, 20.0),), crowd_category_ids=(1,)
        ),
        Sample(_image(images / "c.png", 16, 16), 16, 16, 3, ((2.0, 2.0, 4.0, 4.0),), (1,)),
    )


@pytest.fixture
def crowd_split(tmp_path):
    images = tmp_path / "images"
    samples = _samples(images)
    write_coco(tmp_path / "train.json", CATEGORIES, samples, images)
    return tmp_path / "train.json", images, samples


def test_crowds_survive_a_round_trip(crowd_split):
    annotations, images, samples = crowd_split
    reading = read_coco_split(annotations, images)
    assert reading.samples == samples
    assert reading.samples[0].boxes == ((1.0, 1.0, 5.0, 5.0),)  # the crowds are not instances
    assert reading.samples[1].boxes == () and reading.samples[1].crowd_category_ids == (1,)


def test_the_writer_marks_crowds_and_numbers_them_after_the_boxes(crowd_split):
    annotations, _, _ = crowd_split
    written = json.loads(annotations.read_text())["annotations"]
    assert [(a["id"], a["image_id"], a["iscrowd"]) for a in written] == [
        (1, 1, 0),
        (2, 1, 1),
        (3, 1, 1),
        (4, 2, 1),
        (5, 3, 0),
    ]
    assert written[1]["area"] == 900.0


def test_crowds_from_a_coco_file_go_apart_in_file_order(tmp_path):
    _image(tmp_path / "a.png", 10, 10)
    data = {
        "images": [{"id": 4, "file_name": "a.png", "width": 10, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 4, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1},
            {"id": 2, "image_id": 4, "category_id": 2, "bbox": [1, 1, 2, 2]},
            {"id": 3, "image_id": 4, "category_id": 2, "bbox": [5, 5, 5, 5], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
    }
    (tmp_path / "s.json").write_text(json.dumps(data))
    [sample] = read_coco_split(tmp_path / "s.json", tmp_path).samples
    assert sample.boxes == ((1.0, 1.0, 2.0, 2.0),) and sample.category_ids == (2,)
    assert sample.crowd_boxes == ((0.0, 0.0, 10.0, 10.0), (5.0, 5.0, 5.0, 5.0))
    assert sample.crowd_category_ids == (1, 2)


def _damaged(crowd_split, change) -> Path:
    annotations, _, _ = crowd_split
    data = json.loads(annotations.read_text())
    change(data["annotations"][3])  # image 2's crowd region
    bad = annotations.with_name("bad.json")
    bad.write_text(json.dumps(data))
    return bad


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda a: a.update(bbox=[5, 5, 20, 20]), "bbox [5, 5, 20, 20]: box outside the 20x20 image"),
        (lambda a: a.update(bbox=[0, 0, 0, 5]), "degenerate box"),
        (lambda a: a.update(category_id=9), "unknown category id 9"),
    ],
    ids=["outside", "degenerate", "unknown category"],
)
def test_a_bad_crowd_annotation_is_refused_like_any_box(crowd_split, change, reason):
    _, images, samples = crowd_split
    bad = _damaged(crowd_split, change)
    with pytest.raises(DataError) as error:
        read_coco_split(bad, images)
    assert str(error.value).startswith(f"{bad}: annotation id 4 (image id 2): ")
    assert reason in str(error.value)
    reading = read_coco_split(bad, images, lenient=True)
    assert reading.samples[1] == Sample(samples[1].path, 20, 20, 2)  # the crowd region went alone
    assert len(reading.skipped) == 1 and reason in reading.skipped[0]


def test_a_domain_checks_the_crowd_categories(tmp_path):
    path = tmp_path / "a.png"
    with pytest.raises(DataError, match=r"uses unknown category id\(s\) \[5\]"):
        Domain(
            "d",
            "detection",
            CATEGORIES,
            {"train": (Sample(path, 8, 8, crowd_boxes=((0, 0, 1, 1),), crowd_category_ids=(5,)),)},
        )
    with pytest.raises(DataError, match=r"has 1 crowd box\(es\) but 0 crowd category id\(s\)"):
        Domain("d", "detection", CATEGORIES, {"train": (Sample(path, 8, 8, crowd_boxes=((0, 0, 1, 1),)),)})


def test_crowds_reach_evaluation_but_not_training(tmp_path, crowd_split):
    annotations, images, samples = crowd_split
    index = {
        "domains": [
            {
                "name": "c",
                "task": "detection",
                "format": "coco",
                "splits": {"train": {"annotations": str(annotations), "images": str(images)}},
            }
        ]
    }
    (tmp_path / "gemlab-data.yaml").write_text(yaml.safe_dump(index))
    mixture, _ = load_collection(tmp_path)
    domain = mixture.domains[0]
    assert domain.split("train") == samples
    _, target = load_sample(domain, domain.split("train")[1])
    assert len(target["boxes"]) == 0 and len(target["labels"]) == 0
    truth = ground_truth(domain, "train")
    assert truth["annotations"] == coco_dict(CATEGORIES, samples, images)["annotations"]
    assert [a["iscrowd"] for a in truth["annotations"]] == [0, 1, 1, 1, 0]
