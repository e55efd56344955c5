"""The Hungarian matcher: least total cost, checked against every assignment of small cases."""

import itertools
import math

import pytest
import torch

from gemlab.models.detection.matcher import HungarianMatcher
from gemlab.models.detection.structures import DetectionTargets, Prediction
from helpers import giou_written_out


def _random_boxes(generator: torch.Generator, count: int) -> torch.Tensor:
    """(count, 4) cxcywh boxes inside the unit square."""
    size = 0.05 + 0.4 * torch.rand((count, 2), generator=generator)
    centre = size / 2 + (1 - size) * torch.rand((count, 2), generator=generator)
    return torch.cat([centre, size], dim=1)


def _case(seed: int, queries: int, counts: list[int], classes: int = 4):
    generator = torch.Generator().manual_seed(seed)
    prediction = Prediction(
        logits=3 * torch.randn((len(counts), queries, classes), generator=generator),
        boxes=torch.stack([_random_boxes(generator, queries) for _ in counts]),
    )
    targets = DetectionTargets(
        boxes=[_random_boxes(generator, n) for n in counts],
        labels=[torch.randint(classes, (n,), generator=generator) for n in counts],
        valid_classes=torch.ones((len(counts), classes), dtype=torch.bool),
    )
    return prediction, targets


def _pair_cost(logit: float, predicted, target, alpha=0.25, gamma=2.0) -> float:
    """L_match of one (query, object) pair with the default weights, in plain Python."""
    p = 1 / (1 + math.exp(-logit))
    positive = alpha * (1 - p) ** gamma * -math.log(p)
    negative = (1 - alpha) * p**gamma * -math.log(1 - p)
    l1 = sum(abs(x - y) for x, y in zip(predicted, target, strict=True))
    return 2.0 * (positive - negative) + 5.0 * l1 - 2.0 * giou_written_out(predicted, target)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("queries", "counts"), [(5, [3, 1, 2]), (3, [3, 2]), (4, [1]), (2, [3])])
def test_the_matching_has_the_least_total_cost_of_all_assignments(seed, queries, counts):
    prediction, targets = _case(seed, queries, counts)
    matches = HungarianMatcher().match(prediction, targets)
    for b, (query_ids, object_ids) in enumerate(matches):
        logits, boxes = prediction.logits[b].tolist(), prediction.boxes[b].tolist()
        labels, truth = targets.labels[b].tolist(), targets.boxes[b].tolist()

        def cost(pairs, logits=logits, boxes=boxes, labels=labels, truth=truth):
            return sum(_pair_cost(logits[q][labels[j]], boxes[q], truth[j]) for q, j in pairs)

        n = len(labels)
        # Every one-to-one assignment: with more objects than queries, each query takes a distinct object.
        if n <= queries:
            candidates = [list(zip(p, range(n), strict=True)) for p in itertools.permutations(range(queries), n)]
        else:
            candidates = [list(zip(range(queries), p, strict=True)) for p in itertools.permutations(range(n), queries)]
        best = min(cost(pairs) for pairs in candidates)
        assert len(query_ids) == len(object_ids) == min(n, queries)
        assert len(set(query_ids.tolist())) == len(query_ids) and len(set(object_ids.tolist())) == len(object_ids)
        assert query_ids.tolist() == sorted(query_ids.tolist())
        assert cost(zip(query_ids.tolist(), object_ids.tolist(), strict=True)) == pytest.approx(best, rel=1e-5)


def test_the_cost_matrix_is_the_written_out_formula():
    prediction, targets = _case(0, 4, [3])
    matrix = HungarianMatcher().costs(prediction, targets)[0]
    for q in range(4):
        for j in range(3):
            logit = prediction.logits[0, q, targets.labels[0][j]].item()
            expected = _pair_cost(logit, prediction.boxes[0, q].tolist(), targets.boxes[0][j].tolist())
            assert matrix[q, j].item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_an_obvious_match_is_found():
    truth = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.6, 0.3, 0.2]])
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2], [0.9, 0.9, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]])
    logits = torch.full((1, 4, 2), -4.0)
    prediction = Prediction(logits, boxes.unsqueeze(0))
    targets = DetectionTargets([truth], [torch.tensor([0, 1])], torch.ones((1, 2), dtype=torch.bool))
    [(queries, objects)] = HungarianMatcher().match(prediction, targets)
    assert dict(zip(queries.tolist(), objects.tolist(), strict=True)) == {1: 1, 3: 0}


def test_images_without_targets_get_empty_indices():
    prediction, targets = _case(1, 4, [0, 2, 0])
    matches = HungarianMatcher().match(prediction, targets)
    assert [len(q) for q, _ in matches] == [0, 2, 0]
    for queries, objects in (matches[0], matches[2]):
        assert queries.dtype == objects.dtype == torch.long and queries.shape == objects.shape == (0,)


def test_no_gradient_flows_through_the_matcher():
    prediction, targets = _case(2, 3, [2])
    prediction.logits.requires_grad_(True)
    assert not any(m.requires_grad for m in HungarianMatcher().costs(prediction, targets))


@pytest.mark.parametrize(
    "arguments", [{"cost_box": -1.0}, {"alpha": 1.5}, {"cost_class": 0, "cost_box": 0, "cost_giou": 0}]
)
def test_bad_weights_are_refused(arguments):
    with pytest.raises(ValueError, match="HungarianMatcher"):
        HungarianMatcher(**arguments)


def test_a_batch_size_mismatch_is_refused():
    prediction, targets = _case(3, 3, [1, 1])
    targets.boxes, targets.labels = targets.boxes[:1], targets.labels[:1]
    with pytest.raises(ValueError, match="2 predicted images but 1 targets"):
        HungarianMatcher().match(prediction, targets)
