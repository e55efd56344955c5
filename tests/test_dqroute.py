"""DQRoute (seed 004) against loop-by-loop transcriptions of its equations, and its router spec."""

from __future__ import annotations

import math

import pytest
import torch

from gemlab.engine.parallel import expert_parameters
from gemlab.models.dqroute import DQRouteHead
from gemlab.models.resnet import MoEResNet
from gemlab.models.vit import MoEViT
from gemlab.moe.difficulty import (
    ClassDifficulty,
    class_difficulty,
    mixed_weights,
    multiplicative_update,
    quantity_weights,
)
from gemlab.moe.layer import MoELayer
from gemlab.moe.ood_losses import OOD_LOSSES, ood_loss
from gemlab.moe.registry import ROUTERS, build_router
from gemlab.moe.routers.confidence import class_groups, dqroute_head, epoch_in_steps
from gemlab.moe.spec import RouterSpec, RunFacts

ENTROPY = [0.9, 0.3, 1.5, 0.0]
ACCURACY = [0.2, 0.8, 0.5, 0.4]
COUNTS = (300, 60, 12, 5)  # many, medium, few, few


def _difficulty_loop(entropy, accuracy, lam, a_max=None):
    """Eq. 1 written out: d_c = H_c / H_max + λ (1 - A_c / A_max)."""
    h_max = max(entropy)
    top = max(accuracy) if a_max is None else a_max
    return [h / h_max + lam * (1 - a / top) for h, a in zip(entropy, accuracy, strict=True)]


@pytest.mark.parametrize(("lam", "a_max"), [(1.0, None), (0.5, 1.0), (0.0, None)])
def test_eq1_difficulty_matches_its_transcription(lam, a_max):
    d = class_difficulty(torch.tensor(ENTROPY), torch.tensor(ACCURACY), lam, a_max)
    assert d.tolist() == pytest.approx(_difficulty_loop(ENTROPY, ACCURACY, lam, a_max), rel=1e-6)


def test_eq2_is_a_multiplicative_recursion_not_a_recomputation():
    gamma, w0 = 2.0, [0.1, 0.2, 0.3, 0.4]
    d1 = _difficulty_loop(ENTROPY, ACCURACY, 1.0)
    d2 = [0.5, 0.1, 0.9, 0.2]

    def step(w, d):  # Eq. 2 written out
        scaled = [wc * math.exp(gamma * dc) for wc, dc in zip(w, d, strict=True)]
        return [s / sum(scaled) for s in scaled]

    w1 = multiplicative_update(torch.tensor(w0), torch.tensor(d1), gamma)
    w2 = multiplicative_update(w1, torch.tensor(d2), gamma)
    assert w1.tolist() == pytest.approx(step(w0, d1), rel=1e-5)
    assert w2.tolist() == pytest.approx(step(step(w0, d1), d2), rel=1e-5)
    # the recursion remembers: two epochs compound (w ∝ w0 exp(γ(d1 + d2))), unlike weights recomputed from d2 alone
    assert w2.tolist() != pytest.approx(step(w0, d2), rel=1e-3)


def test_eq3_mixes_difficulty_and_quantity_weights():
    q = quantity_weights(COUNTS)
    inverse = [1 / n for n in COUNTS]
    assert q.tolist() == pytest.approx([v / sum(inverse) for v in inverse], rel=1e-6)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    mixed = mixed_weights(w, q, 0.3)
    assert mixed.tolist() == pytest.approx(
        [0.3 * a + 0.7 * b for a, b in zip(w.tolist(), q.tolist(), strict=True)], rel=1e-6
    )
    assert mixed.sum().item() == pytest.approx(1.0)


def test_class_difficulty_closes_an_epoch_every_epoch_steps_updates():
    state = ClassDifficulty(COUNTS, gamma=2.0, lam=1.0, alpha=0.5, momentum=0.5, epoch_steps=2)
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.7, 0.1]])
    labels = torch.tensor([0, 1, 2, 2])
    state.observe(probs, labels)
    state.update_state()
    assert state.weights.tolist() == pytest.approx([0.25] * 4)  # the epoch is not over yet
    state.observe(probs, labels)
    state.update_state()
    # the window, written out: per class, mean entropy and accuracy of its samples over both batches
    entropy = [-sum(p * math.log(p) for p in row) for row in probs.tolist()]
    correct = [
        float(max(range(4), key=lambda c: row[c]) == y) for row, y in zip(probs.tolist(), labels.tolist(), strict=True)
    ]
    h = [entropy[0], entropy[1], (entropy[2] + entropy[3]) / 2, 0.0]  # class 3 unseen: stays 0
    a = [0.5 * correct[0], 0.5 * correct[1], 0.5 * (correct[2] + correct[3]) / 2, 0.0]  # A ← m A + (1 - m) acc
    assert state.entropy.tolist() == pytest.approx(h, rel=1e-5)
    assert state.accuracy.tolist() == pytest.approx(a, rel=1e-6)
    d = _difficulty_loop(h, a, 1.0)
    scaled = [0.25 * math.exp(2.0 * dc) for dc in d]
    assert state.weights.tolist() == pytest.approx([s / sum(scaled) for s in scaled], rel=1e-5)
    q = quantity_weights(COUNTS).tolist()
    expected = [4 * (0.5 * s / sum(scaled) + 0.5 * qc) for s, qc in zip(scaled, q, strict=True)]
    assert state.class_weights().tolist() == pytest.approx(expected, rel=1e-5)
    assert state.window_seen.sum().item() == 0  # a new window
    assert {"weights", "accuracy", "entropy", "window_seen", "steps"} <= set(state.state_dict())


def test_class_difficulty_names_its_step_statistics_for_the_world_mean():
    state = ClassDifficulty(COUNTS)
    assert [id(t) for t in state.synchronised_state()] == [
        id(state.window_entropy),
        id(state.window_correct),
        id(state.window_seen),
    ]


@pytest.mark.parametrize(
    ("options", "key"),
    [({"momentum": 1.0}, "momentum"), ({"alpha": 1.5}, "alpha"), ({"a_max": 0.0}, "a_max"), ({"lam": -1}, "lam")],
)
def test_class_difficulty_refuses_bad_values_by_name(options, key):
    with pytest.raises(ValueError, match=key):
        ClassDifficulty(COUNTS, **options)


# ----------------------------------------------------------------------------------------------- OOD losses
LOGITS = [[2.0, -1.0, 0.5], [-0.3, 0.8, -2.0]]
MEMBER = [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _per_expert(kind, logit, b, log_probs):
    s = _sigmoid(logit)
    bce = -(b * math.log(s) + (1 - b) * math.log(1 - s))  # Eq. 7
    if kind == "bce":
        return bce
    if kind == "focal":
        return -(b * (1 - s) ** 2 * math.log(s) + (1 - b) * s**2 * math.log(1 - s))
    if kind == "margin":
        return b * max(0.0, 1 - logit) + (1 - b) * max(0.0, 1 + logit)
    return bce + (1 - b) * (-sum(log_probs) / len(log_probs))  # entropy: + outlier exposure off-group


@pytest.mark.parametrize("kind", sorted(OOD_LOSSES))
def test_eq8_sums_each_ood_loss_over_experts(kind):
    torch.manual_seed(0)
    log_probs = torch.randn(2, 3, 4).log_softmax(dim=-1)
    value = ood_loss(kind, torch.tensor(LOGITS), torch.tensor(MEMBER), log_probs)
    direct = (
        sum(
            sum(_per_expert(kind, LOGITS[i][k], MEMBER[i][k], log_probs[i, k].tolist()) for k in range(3))  # Eq. 8: Σ_k
            for i in range(2)
        )
        / 2
    )  # the expectation over samples
    assert value.item() == pytest.approx(direct, rel=1e-5)
    with pytest.raises(ValueError, match="ood_loss='hinge'"):
        ood_loss("hinge", torch.tensor(LOGITS), torch.tensor(MEMBER), log_probs)


# ------------------------------------------------------------------------------------------------ the head
GROUPS = class_groups(COUNTS, medium_threshold=100, tail_threshold=20)


def _experts(head: DQRouteHead) -> list:
    return [head.experts.expert(k) for k in range(3)]


def _head(**options) -> DQRouteHead:
    torch.manual_seed(0)
    return DQRouteHead(8, GROUPS, COUNTS, **options).train()


def test_class_groups_follow_the_paper_fewer_than_each_threshold():
    assert GROUPS == [[0, 1, 2, 3], [1, 2, 3], [2, 3]]
    assert class_groups([100, 99, 20, 19], 100, 20) == [[0, 1, 2, 3], [1, 2, 3], [3]]  # strictly fewer
    assert class_groups([126] * 10, 100, 20) == [list(range(10)), [], []]  # balanced digits: [10, 0, 0]
    with pytest.raises(ValueError, match="tail_threshold=30, medium_threshold=20"):
        class_groups([1], 20, 30)


def test_eq5_eq6_the_prediction_is_the_confidence_weighted_mixture_of_experts():
    head = _head().eval()
    features = torch.randn(3, 8)
    logits, routing = head(features)
    probs = [[e.classifier(features)[i].softmax(-1).tolist() for e in _experts(head)] for i in range(3)]
    scores = [[torch.sigmoid(e.confidence(features)[i, 0]).item() for e in _experts(head)] for i in range(3)]
    for i in range(3):
        alpha = [s / sum(scores[i]) for s in scores[i]]  # Eq. 5
        fused = [sum(alpha[k] * probs[i][k][c] for k in range(3)) for c in range(4)]  # Eq. 6
        assert logits[i].exp().tolist() == pytest.approx(fused, rel=1e-5)
    alpha_sums = [sum(s[k] / sum(s) for s in scores) for k in range(3)]
    assert routing.counts.tolist() == pytest.approx(alpha_sums, rel=1e-5)  # the load: summed α per expert
    assert routing.aux_losses == {}  # evaluation: no loss


def test_eq9_eq10_the_objective_matches_its_transcription():
    head = _head(ood_weight=0.3, ood_loss="bce", epoch_steps=1)
    head.difficulty.weights.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))  # a state after some epochs
    features, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    _, routing = head(features, labels=labels)
    log_probs = [[e.classifier(features)[i].log_softmax(-1).tolist() for e in _experts(head)] for i in range(4)]
    ood_logits = [[e.confidence(features)[i, 0].item() for e in _experts(head)] for i in range(4)]
    w_tilde = head.difficulty.class_weights().tolist()
    cls, ood = 0.0, 0.0
    for i, y in enumerate(labels.tolist()):
        s = [_sigmoid(v) for v in ood_logits[i]]
        for k in range(3):
            b = float(y in GROUPS[k])  # Eq. 4's D_k
            alpha = s[k] / sum(s)  # Eq. 5
            cls += b * alpha * w_tilde[y] * -log_probs[i][k][y]  # Eq. 10
            ood += -(b * math.log(s[k]) + (1 - b) * math.log(1 - s[k]))  # Eq. 7, summed over k (Eq. 8)
    assert routing.aux_losses["cls"].item() == pytest.approx(cls / 4, rel=1e-5)
    assert routing.aux_losses["ood"].item() == pytest.approx(0.3 * ood / 4, rel=1e-5)  # λ_OOD · L_OOD (Eq. 9)
    assert head.difficulty.window_seen.tolist() == [1.0, 1.0, 1.0, 1.0]  # the batch went into the statistics


def test_the_confidence_heads_learn_from_the_ood_loss_alone():
    head = _head()
    _, routing = head(torch.randn(4, 8), labels=torch.tensor([0, 1, 2, 3]))
    routing.aux_losses["cls"].backward()
    for expert in _experts(head):
        assert expert.confidence.weight.grad is None
    assert all(e.classifier.weight.grad.abs().sum() > 0 for e in _experts(head))  # each owns one of the labels


def test_ablations():
    features, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    head = _head(ablation="ood_only")
    head.difficulty.weights.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    reweighted = _head()
    reweighted.difficulty.weights.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    plain, weighted = head(features, labels=labels)[1].aux_losses, reweighted(features, labels=labels)[1].aux_losses
    assert plain["cls"].item() != pytest.approx(weighted["cls"].item())  # ood_only: w̃ = 1
    assert plain["ood"].item() == pytest.approx(weighted["ood"].item())
    for ablation, alpha in (("difficulty_only", 1.0), ("quantity_only", 0.0)):
        single = _head(ablation=ablation)
        logits, routing = single(features, labels=labels)
        assert set(routing.aux_losses) == {"cls"} and single.difficulty.alpha == alpha
        assert routing.counts.tolist() == [4.0, 0.0, 0.0]  # every sample to the general expert
        log_probs = _experts(single)[0].classifier(features).log_softmax(dim=-1)
        torch.testing.assert_close(logits, log_probs)  # one expert: its own prediction
    expected = 4 * quantity_weights(COUNTS)
    torch.testing.assert_close(_head(ablation="quantity_only").difficulty.class_weights(), expected)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ood_loss": "hinge"}, "ood_loss='hinge'"),
        ({"ablation": "both"}, "ablation='both'"),
        ({"ood_weight": -1.0}, "ood_weight=-1.0"),
        ({"epoch_steps": 0}, "epoch_steps=0"),
    ],
)
def test_bad_head_options(options, message):
    with pytest.raises(ValueError, match=message):
        DQRouteHead(8, GROUPS, COUNTS, **options)


def test_the_spec_builds_a_head_for_three_experts_and_a_dense_trunk():
    spec = ROUTERS["confidence"]
    assert spec.build is None and spec.head is not None
    facts = RunFacts(num_experts=3, class_counts=COUNTS, batch_size=64)
    options = {"medium_threshold": 100, "tail_threshold": 20}
    model = MoEViT(num_classes=4, moe=None, head=spec.classifier(facts, options), image_size=8, dim=8, depth=2)
    assert not any(isinstance(m, MoELayer) for m in model.modules())
    assert sorted(expert_parameters(model)) == [0, 1, 2]  # a checkpoint shard per expert, as the run expects
    assert isinstance(model.head, DQRouteHead) and model.head.difficulty.epoch_steps == 6  # ceil(377 / 64)
    out = model(torch.randn(2, 3, 8, 8), labels=torch.tensor([0, 3]))
    assert set(out.aux_losses) == {"cls", "ood"} and len(out.routings) == 1
    assert spec.build_criterion(facts, {})(out.logits, torch.tensor([0, 3])).item() == 0.0  # the head's objective
    with pytest.raises(ValueError, match=r"moe\.num_experts=4"):
        dqroute_head(8, RunFacts(num_experts=4, class_counts=COUNTS), 100, 20)
    assert epoch_in_steps(facts, 9) == 9
    with pytest.raises(ValueError, match=r"router\.epoch_steps"):
        epoch_in_steps(RunFacts(num_experts=3, class_counts=COUNTS), None)


def test_a_head_router_has_no_layer_router_and_a_spec_declares_one_of_the_two():
    with pytest.raises(ValueError, match="classifier head"):
        build_router("confidence", 8, RunFacts(num_experts=3, class_counts=COUNTS))
    with pytest.raises(TypeError, match="exactly one of build and head"):
        RouterSpec(name="neither")


def test_the_resnet_takes_the_head_on_its_pooled_trunk_features():
    facts = RunFacts(num_experts=3, class_counts=COUNTS, batch_size=64)
    head = ROUTERS["confidence"].classifier(facts, {"medium_threshold": 100, "tail_threshold": 20})
    model = MoEResNet(num_classes=4, moe=None, head=head)
    out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 3]))
    assert model.experts is None and isinstance(model.head, DQRouteHead)
    assert out.logits.shape == (2, 4) and set(out.aux_losses) == {"cls", "ood"}
