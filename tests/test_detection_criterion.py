"""The detection set loss: the focal-loss formula, the label-space mask, box terms, denoising, every layer."""

import math

import pytest
import torch

from gemlab.models.detection.criterion import DetectionCriterion, LossTerms
from gemlab.models.detection.structures import DenoisingLayout, DetectionOutput, DetectionTargets, Prediction
from helpers import giou_written_out

CLASSES = 5
ALPHA, GAMMA = 0.25, 2.0


def _boxes(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """cxcywh boxes inside the unit square, of shape (*shape, 4)."""
    size = 0.05 + 0.4 * torch.rand((*shape, 2), generator=generator)
    centre = size / 2 + (1 - size) * torch.rand((*shape, 2), generator=generator)
    return torch.cat([centre, size], dim=-1)


def _targets(generator: torch.Generator, counts: list[int]) -> DetectionTargets:
    """Targets whose image b annotates classes 0..2 (b even) or 2..4 (b odd); labels among them."""
    valid = torch.zeros((len(counts), CLASSES), dtype=torch.bool)
    labels = []
    for b, n in enumerate(counts):
        own = torch.tensor([0, 1, 2]) if b % 2 == 0 else torch.tensor([2, 3, 4])
        valid[b, own] = True
        labels.append(own[torch.randint(3, (n,), generator=generator)])
    return DetectionTargets([_boxes(generator, n) for n in counts], labels, valid)


def _prediction(generator: torch.Generator, batch: int, queries: int) -> Prediction:
    return Prediction(
        2 * torch.randn((batch, queries, CLASSES), generator=generator), _boxes(generator, batch, queries)
    )


def _case(seed: int = 0, counts=(2, 3), queries: int = 6):
    generator = torch.Generator().manual_seed(seed)
    targets = _targets(generator, list(counts))
    return _prediction(generator, len(counts), queries), targets, generator


def _focal(logit: float, positive: bool) -> float:
    """FL(p_t) = −α_t (1 − p_t)^γ log p_t (Lin et al., 2017), written out."""
    p = 1 / (1 + math.exp(-logit))
    p_t, alpha_t = (p, ALPHA) if positive else (1 - p, 1 - ALPHA)
    return -alpha_t * (1 - p_t) ** GAMMA * math.log(p_t)


def _expected(prediction: Prediction, targets: DetectionTargets, pairs, supervised, normaliser) -> dict[str, float]:
    """The unweighted terms written out: ``pairs[b]`` lists (query, object), ``supervised[b]`` the queries in the
    class loss; classes the image does not annotate are skipped."""
    terms = {"class": 0.0, "box": 0.0, "giou": 0.0}
    for b in range(len(targets)):
        positive = {q: int(targets.labels[b][j]) for q, j in pairs[b]}
        for q in supervised[b]:
            for c in range(CLASSES):
                if targets.valid_classes[b, c]:
                    terms["class"] += _focal(prediction.logits[b, q, c].item(), positive.get(q) == c)
        for q, j in pairs[b]:
            predicted, truth = prediction.boxes[b, q].tolist(), targets.boxes[b][j].tolist()
            terms["box"] += sum(abs(x - y) for x, y in zip(predicted, truth, strict=True))
            terms["giou"] += 1 - giou_written_out(predicted, truth)
    return {name: value / normaliser for name, value in terms.items()}


def _values(terms) -> dict[str, float]:
    return {name: value.item() for name, value in terms.items()}


def test_the_class_and_box_terms_are_the_written_out_formulas():
    prediction, targets, _ = _case()
    criterion = DetectionCriterion(CLASSES)
    terms = criterion(DetectionOutput(final=prediction), targets)
    pairs = [list(zip(q.tolist(), j.tolist(), strict=True)) for q, j in terms.matches]
    expected = _expected(prediction, targets, pairs, [range(6), range(6)], normaliser=5)
    weights = {"class": 1.0, "box": 5.0, "giou": 2.0}
    assert set(terms) == {"class", "box", "giou"}
    for name, value in _values(terms).items():
        assert value == pytest.approx(weights[name] * expected[name], rel=1e-5)


def test_the_terms_are_a_dict_with_a_total_and_the_final_matches():
    prediction, targets, _ = _case()
    terms = DetectionCriterion(CLASSES)(DetectionOutput(final=prediction), targets)
    assert isinstance(terms, LossTerms) and isinstance(terms, dict)
    assert terms.total.item() == pytest.approx(sum(terms.values()).item())
    assert [len(q) for q, _ in terms.matches] == [2, 3]


def test_logits_of_classes_an_image_does_not_annotate_change_nothing():
    prediction, targets, generator = _case(1)
    criterion = DetectionCriterion(CLASSES)
    before = _values(criterion(DetectionOutput(final=prediction), targets))
    masked = ~targets.valid_classes.unsqueeze(1).expand_as(prediction.logits)
    logits = prediction.logits.clone()
    logits[masked] = 20 * torch.randn(int(masked.sum()), generator=generator)
    logits[0, 0, 3], logits[1, 0, 0] = math.inf, -math.inf  # not even an infinite logit
    logits.requires_grad_(True)
    terms = criterion(DetectionOutput(final=Prediction(logits, prediction.boxes)), targets)
    assert _values(terms) == pytest.approx(before, rel=1e-6)
    terms.total.backward()
    assert (logits.grad[masked] == 0).all() and (logits.grad[~masked] != 0).any()


def test_perfect_predictions_give_no_box_loss():
    generator = torch.Generator().manual_seed(2)
    targets = _targets(generator, [2, 1])
    prediction = _prediction(generator, 2, 5)
    for b, boxes in enumerate(targets.boxes):
        prediction.boxes[b, 1 : 1 + len(boxes)] = boxes  # queries 1.. hold the objects exactly
        prediction.logits[b, 1 : 1 + len(boxes)] = -10.0
        prediction.logits[b, torch.arange(1, 1 + len(boxes)), targets.labels[b]] = 10.0
    output = DetectionOutput(final=prediction, intermediate=[prediction, prediction], proposals=prediction)
    terms = DetectionCriterion(CLASSES)(output, targets)
    assert terms["box"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["giou"].item() == pytest.approx(0.0, abs=1e-4)  # float32 rounding of IoU = 1
    assert [q.tolist() for q, _ in terms.matches] == [[1, 2], [1]]


def test_every_layer_and_the_proposals_are_supervised_alike():
    prediction, targets, _ = _case(3)
    criterion = DetectionCriterion(CLASSES)
    one = _values(criterion(DetectionOutput(final=prediction), targets))
    four = _values(
        criterion(
            DetectionOutput(final=prediction, intermediate=[prediction, prediction], proposals=prediction), targets
        )
    )
    assert four == pytest.approx({name: 4 * value for name, value in one.items()}, rel=1e-5)


def _denoising_case(seed: int = 4):
    """Two images with 2 and 1 objects; 2 groups of 2 x 3 slots; and a matching-query prediction."""
    prediction, targets, generator = _case(seed, counts=(2, 1), queries=4)
    layout = DenoisingLayout(groups=2, max_objects=3)
    denoising = _prediction(generator, 2, layout.size)
    return prediction, targets, layout, denoising, generator


def _with_denoising(prediction, layout, denoising) -> DetectionOutput:
    return DetectionOutput(final=prediction, denoising=[denoising], layout=layout)


def test_denoising_terms_are_the_written_out_formulas():
    prediction, targets, layout, denoising, _ = _denoising_case()
    criterion = DetectionCriterion(CLASSES)
    without = _values(criterion(DetectionOutput(final=prediction), targets))
    terms = _values(criterion(_with_denoising(prediction, layout, denoising), targets))
    pairs, supervised = [], []
    for labels in targets.labels:
        n = len(labels)
        positives, negatives = layout.positive_slots(n).tolist(), layout.negative_slots(n).tolist()
        pairs.append(list(zip(positives, list(range(n)) * layout.groups, strict=True)))
        supervised.append(positives + negatives)
    assert pairs[0] == [(0, 0), (1, 1), (6, 0), (7, 1)] and supervised[1] == [0, 6, 3, 9]
    expected = _expected(denoising, targets, pairs, supervised, normaliser=layout.groups * 3)
    weights = {"class": 1.0, "box": 5.0, "giou": 2.0}
    for name in terms:
        assert terms[name] - without[name] == pytest.approx(weights[name] * expected[name], rel=1e-5)


def test_denoising_negatives_get_only_a_class_loss_and_padding_nothing():
    prediction, targets, layout, denoising, generator = _denoising_case()
    criterion = DetectionCriterion(CLASSES)
    before = _values(criterion(_with_denoising(prediction, layout, denoising), targets))
    counts = [len(labels) for labels in targets.labels]
    negatives = [layout.negative_slots(n) for n in counts]
    padding = [
        torch.tensor(sorted(set(range(layout.size)) - set(layout.positive_slots(n).tolist()) - set(neg.tolist())))
        for n, neg in zip(counts, negatives, strict=True)
    ]
    assert padding[1].tolist() == [1, 2, 4, 5, 7, 8, 10, 11]

    def perturbed(slots, logits: bool, boxes: bool) -> dict[str, float]:
        changed = Prediction(denoising.logits.clone(), denoising.boxes.clone())
        for b, where in enumerate(slots):
            if logits:
                changed.logits[b, where] = 5 * torch.randn((len(where), CLASSES), generator=generator)
            if boxes:
                changed.boxes[b, where] = _boxes(generator, len(where))
        return _values(criterion(_with_denoising(prediction, layout, changed), targets))

    assert perturbed(padding, logits=True, boxes=True) == pytest.approx(before, rel=1e-6)
    assert perturbed(negatives, logits=False, boxes=True) == pytest.approx(before, rel=1e-6)
    moved = perturbed(negatives, logits=True, boxes=False)
    assert moved["class"] != pytest.approx(before["class"])
    assert (moved["box"], moved["giou"]) == pytest.approx((before["box"], before["giou"]), rel=1e-6)
    positives = perturbed([layout.positive_slots(n) for n in counts], logits=False, boxes=True)
    assert positives["box"] != pytest.approx(before["box"])


def test_a_batch_without_objects_has_a_finite_loss_and_gradient():
    generator = torch.Generator().manual_seed(5)
    targets = _targets(generator, [0, 0])
    prediction = _prediction(generator, 2, 3)
    prediction.logits.requires_grad_(True)
    layout = DenoisingLayout(groups=1, max_objects=1)
    output = DetectionOutput(final=prediction, denoising=[_prediction(generator, 2, layout.size)], layout=layout)
    terms = DetectionCriterion(CLASSES)(output, targets)
    assert terms["box"].item() == terms["giou"].item() == 0.0
    assert math.isfinite(terms["class"].item()) and terms["class"].item() > 0
    terms.total.backward()
    assert prediction.logits.grad.isfinite().all()


def test_the_weights_scale_their_terms():
    prediction, targets, _ = _case(6)
    output = DetectionOutput(final=prediction)
    plain = _values(DetectionCriterion(CLASSES, weights={"class": 1, "box": 1, "giou": 1})(output, targets))
    weighted = _values(DetectionCriterion(CLASSES, weights={"class": 3, "box": 0.5})(output, targets))
    assert weighted == pytest.approx(
        {"class": 3 * plain["class"], "box": 0.5 * plain["box"], "giou": 2 * plain["giou"]}
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 3, "weights": {"cls": 1.0}}, "unknown weight"),
        ({"num_classes": 3, "weights": {"box": -1.0}}, ">= 0"),
        ({"num_classes": 3, "alpha": 2.0}, "alpha"),
    ],
)
def test_bad_settings_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        DetectionCriterion(**arguments)


def test_predictions_that_do_not_fit_are_refused():
    prediction, targets, _, denoising, _ = _denoising_case()
    criterion = DetectionCriterion(CLASSES)
    with pytest.raises(ValueError, match="logits must be"):
        DetectionCriterion(CLASSES + 1)(DetectionOutput(final=prediction), targets)
    with pytest.raises(ValueError, match="without a DenoisingLayout"):
        criterion(DetectionOutput(final=prediction, denoising=[denoising]), targets)
    with pytest.raises(ValueError, match="the layout holds 1"):
        criterion(_with_denoising(prediction, DenoisingLayout(groups=6, max_objects=1), denoising), targets)
    with pytest.raises(ValueError, match="denoising queries but the layout has"):
        criterion(_with_denoising(prediction, DenoisingLayout(groups=1, max_objects=3), denoising), targets)
