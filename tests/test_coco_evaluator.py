"""COCO AP from in-memory ground truth: hand-computed APs, crowd regions, empty cases; and the post-processing.

How COCO's AP is computed (pycocotools ``COCOeval.accumulate``): detections of
a category are ranked by score; precision and recall after each rank make a
curve, whose precision is made non-increasing from the right (the precision
at recall r becomes the best precision at any recall >= r); AP is the mean of
that precision at the 101 recall thresholds 0, 0.01, ..., 1 (0 beyond the
highest recall reached), averaged over categories and, for ``ap``, over the
IoU thresholds 0.50:0.05:0.95.
"""

from pathlib import Path

import pytest
import torch

from gemlab.data.domain import Domain
from gemlab.data.records import Category, Sample
from gemlab.evaluation import AccuracyEvaluator, Evaluator
from gemlab.evaluation.coco import METRICS, CocoEvaluator
from gemlab.models.detection.postprocess import detections, to_domain_labels
from gemlab.models.detection.structures import Prediction

CATEGORIES = (Category(3, "person"), Category(7, "car"))


def _domain(samples: list[Sample], categories=CATEGORIES) -> Domain:
    return Domain("road", "detection", categories, {"train": tuple(samples), "val": tuple(samples)})


def _xyxy(box) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def _found(*rows) -> dict[str, torch.Tensor]:
    """One image's detections from (xywh box, score, label) rows."""
    return {
        "boxes": torch.tensor([_xyxy(box) for box, _, _ in rows], dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor([score for _, score, _ in rows], dtype=torch.float32),
        "labels": torch.tensor([label for _, _, label in rows], dtype=torch.long),
    }


def _evaluate(domain: Domain, image_ids, found) -> dict[str, float]:
    evaluator = CocoEvaluator(domain, "val")
    evaluator.process(image_ids, found)
    return evaluator.evaluate()


SMALL, MEDIUM, LARGE = (10.0, 10.0, 20.0, 20.0), (100.0, 50.0, 50.0, 50.0), (200.0, 150.0, 200.0, 200.0)


def _sizes_domain() -> Domain:
    """Two 640 x 480 images: a small person, a medium car; a large car (COCO's 32² and 96² area bounds)."""
    return _domain(
        [
            Sample(Path("/d/a.png"), 640, 480, 1, (SMALL, MEDIUM), (3, 7)),
            Sample(Path("/d/b.png"), 640, 480, 2, (LARGE,), (7,)),
        ]
    )


def test_perfect_detections_score_one_everywhere(capsys):
    result = _evaluate(_sizes_domain(), [1, 2], [_found((SMALL, 0.9, 3), (MEDIUM, 0.8, 7)), _found((LARGE, 0.7, 7))])
    assert list(result) == list(METRICS)
    assert result == pytest.approx(dict.fromkeys(METRICS, 1.0))
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed


def _one_class_domain(count: int) -> Domain:
    """``count`` images of 100 x 100 px, each with one 40 x 40 car at (10, 10) (a medium box: 1600 px²)."""
    return _domain(
        [Sample(Path(f"/d/{i}.png"), 100, 100, i, ((10.0, 10.0, 40.0, 40.0),), (7,)) for i in range(1, count + 1)]
    )


HIT, MISS = (10.0, 10.0, 40.0, 40.0), (55.0, 55.0, 40.0, 40.0)  # MISS does not overlap HIT at all


def test_a_false_positive_above_every_hit_halves_ap():
    # Two cars, ranked: FP (0.9), TP (0.8), FP (0.7), TP (0.6). Precision after each: 0, 1/2, 1/3, 2/4; recall
    # 0, 1/2, 1/2, 1. Made non-increasing from the right, precision is 1/2 at every recall in [0, 1], so the
    # mean over the 101 thresholds is exactly 0.5 -- at every IoU threshold, as the hits are exact.
    result = _evaluate(
        _one_class_domain(2), [1, 2], [_found((MISS, 0.9, 7), (HIT, 0.8, 7)), _found((MISS, 0.7, 7), (HIT, 0.6, 7))]
    )
    assert result["ap"] == result["ap50"] == result["ap75"] == result["ap_medium"] == pytest.approx(0.5)
    assert result["ap_small"] != result["ap_small"] and result["ap_large"] != result["ap_large"]  # no such GT: NaN


def test_half_the_objects_found_below_a_false_positive():
    # Two cars, ranked: FP (0.9), TP (0.8); the second car is never found. Recall reaches 1/2 with precision
    # 1/2, so the interpolated precision is 1/2 at the 51 thresholds 0, 0.01, ..., 0.50 and 0 at the 50 above:
    # AP = 51 · 0.5 / 101.
    result = _evaluate(_one_class_domain(2), [1, 2], [_found((MISS, 0.9, 7), (HIT, 0.8, 7)), _found()])
    assert result["ap"] == pytest.approx(51 * 0.5 / 101)
    assert result["ap50"] == pytest.approx(51 * 0.5 / 101)


def _crowd_domain(with_crowd: bool) -> Domain:
    """One 200 x 200 image: a car at (10, 10, 40, 40) and, when ``with_crowd``, a crowd of cars over the right half."""
    crowd = {"crowd_boxes": ((100.0, 0.0, 100.0, 200.0),), "crowd_category_ids": (7,)} if with_crowd else {}
    return _domain([Sample(Path("/d/a.png"), 200, 200, 1, (HIT,), (7,), **crowd)])


def test_a_detection_on_a_crowd_region_is_not_a_false_positive():
    inside_crowd = (120.0, 40.0, 30.0, 30.0)  # wholly inside the crowd region, ranked above the hit
    found = [_found((inside_crowd, 0.95, 7), (HIT, 0.9, 7))]
    alone = _evaluate(_crowd_domain(with_crowd=True), [1], [_found((HIT, 0.9, 7))])
    assert alone["ap"] == pytest.approx(1.0)
    # With the crowd annotation the detection is ignored: AP unchanged.
    assert _evaluate(_crowd_domain(with_crowd=True), [1], found)["ap"] == pytest.approx(1.0)
    # Without it, the same detection is a false positive ranked first: precision 1/2 at recall 1, AP 0.5.
    assert _evaluate(_crowd_domain(with_crowd=False), [1], found)["ap"] == pytest.approx(0.5)


def test_a_crowd_region_is_never_a_missed_object():
    # Only the car is found; the crowd region has no detection and does not lower recall.
    assert _evaluate(_crowd_domain(with_crowd=True), [1], [_found((HIT, 0.9, 7))])["ap50"] == pytest.approx(1.0)


def test_no_detections_score_zero_and_no_ground_truth_nan():
    missed = _evaluate(_sizes_domain(), [1, 2], [_found(), _found()])
    assert missed == pytest.approx(dict.fromkeys(METRICS, 0.0))
    assert CocoEvaluator(_sizes_domain(), "val").evaluate() == pytest.approx(dict.fromkeys(METRICS, 0.0))
    empty = _domain([Sample(Path("/d/a.png"), 64, 64, 1)])
    for result in (_evaluate(empty, [1], [_found((HIT, 0.9, 7))]), CocoEvaluator(empty, "val").evaluate()):
        assert all(value != value for value in result.values())  # NaN: nothing to measure


def test_reset_forgets_the_processed_detections():
    evaluator = CocoEvaluator(_one_class_domain(1), "val")
    evaluator.process([1], [_found((MISS, 0.9, 7))])
    assert evaluator.evaluate()["ap"] == 0.0
    evaluator.reset()
    evaluator.process([1], [_found((HIT, 0.9, 7))])
    assert evaluator.evaluate()["ap"] == pytest.approx(1.0)
    assert evaluator.evaluate()["ap"] == pytest.approx(1.0)  # evaluate may be called again


@pytest.mark.parametrize(
    ("image_ids", "found", "message"),
    [
        ([9], [_found((HIT, 0.9, 7))], "image id 9: not an image of the split"),
        ([1], [_found((HIT, 0.9, 1))], r"label\(s\) \[1\] are not category ids"),
        ([1, 1], [_found()], "2 image ids but 1 detection lists"),
        ([1], [{**_found((HIT, 0.9, 7)), "scores": torch.tensor([0.9, 0.8])}], "1 boxes, 2 scores and 1 labels"),
        ([1], [_found(((0.0, 0.0, float("nan"), 1.0), 0.9, 7))], "not finite"),
    ],
)
def test_bad_detections_are_refused(image_ids, found, message):
    with pytest.raises(ValueError, match=message):
        CocoEvaluator(_one_class_domain(1), "val").process(image_ids, found)


def test_the_evaluators_follow_the_protocol():
    assert isinstance(CocoEvaluator(_one_class_domain(1), "val"), Evaluator)
    assert isinstance(AccuracyEvaluator(), Evaluator)


def test_accuracy_and_mean_cross_entropy():
    evaluator = AccuracyEvaluator()
    assert all(v != v for v in evaluator.evaluate().values())
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    evaluator.process(torch.tensor([0, 0]), logits[:2])
    evaluator.process(torch.tensor([0]), logits[2:])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 0])).item()
    # macro-F1 over the classes the labels hold (class 0: precision 1, recall 2/3)
    assert evaluator.evaluate() == pytest.approx({"accuracy": 2 / 3, "loss": expected, "macro_f1": 0.8})
    evaluator.reset()
    with pytest.raises(ValueError, match="labels"):
        evaluator.process(torch.tensor([0]), logits)


# --- post-processing ------------------------------------------------------------------------------------------


def test_detections_rank_only_valid_classes_and_scale_boxes_to_pixels():
    logits = torch.full((2, 3, 4), -5.0)
    logits[0, 1, 2] = 4.0  # image 0's best pair, valid
    logits[0, 0, 3] = 9.0  # higher, but class 3 is not valid for image 0
    logits[0, 2, 0] = 1.0
    logits[1, 0, 3] = 2.0
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.5, 0.25, 0.2, 0.1], [0.9, 0.9, 0.2, 0.2]]).expand(2, 3, 4)
    valid = torch.tensor([[True, True, True, False], [False, False, False, True]])
    found = detections(Prediction(logits, boxes.clone()), valid, torch.tensor([200.0, 100.0]), top_k=2)
    assert found[0]["labels"].tolist() == [2, 0] and found[1]["labels"].tolist() == [3, 3]
    assert found[0]["scores"].tolist() == pytest.approx(torch.sigmoid(torch.tensor([4.0, 1.0])).tolist())
    # Query 1 of image 0: cx 0.5, cy 0.25, w 0.2, h 0.1 of the canvas, times 200 px per unit.
    assert found[0]["boxes"][0].tolist() == pytest.approx([80.0, 40.0, 120.0, 60.0])
    # Image 1 has one valid class: k = min(top_k, 3 queries x 1 class) and its best query comes first.
    assert found[1]["boxes"][0].tolist() == pytest.approx([0.0, 0.0, 50.0, 50.0])
    clipped = detections(
        Prediction(logits, boxes), valid, [200.0, 100.0], 5, image_sizes=torch.tensor([[150, 190]] * 2)
    )
    assert len(clipped[0]["scores"]) == 5 and len(clipped[1]["scores"]) == 3
    assert clipped[0]["boxes"][1].tolist() == pytest.approx([160.0, 150.0, 190.0, 150.0])  # query 2, clipped


def test_detections_to_domain_ids_to_ap_one():
    # A perfect prediction on a 640 x 480 image letterboxed into a canvas: scale = max(640, 480) px per unit.
    domain = _sizes_domain()
    local_to_global = {3: 0, 7: 1}  # this domain's ids in a mixture's label space of two classes
    per_image = {1: [(SMALL, 3), (MEDIUM, 7)], 2: [(LARGE, 7)]}
    logits = torch.full((2, 4, 2), -6.0)
    boxes = torch.full((2, 4, 4), 0.5)
    for b, objects in enumerate(per_image.values()):
        for q, (box, label) in enumerate(objects):
            x, y, w, h = (v / 640 for v in box)
            boxes[b, q] = torch.tensor([x + w / 2, y + h / 2, w, h])
            logits[b, q, local_to_global[label]] = 6.0
    found = detections(Prediction(logits, boxes), torch.ones((2, 2), dtype=torch.bool), torch.tensor([640.0, 640.0]))
    to_domain_labels(found, local_to_global)
    assert _evaluate(domain, [1, 2], found) == pytest.approx(dict.fromkeys(METRICS, 1.0))
    with pytest.raises(ValueError, match=r"global class id\(s\) \[5\]"):
        to_domain_labels([{"labels": torch.tensor([5])}], local_to_global)
