"""Class-level GEM-DINO (paper §4.8): a per-query assignment predictor supervised by the plan's class -> expert map.

The objective, in the paper's terms: a linear predictor gives each decoder
query q a distribution over experts; in training, if q matches an object of
class c, its correct expert is π(c) and CE(predictor(q), π(c)) is minimised
(no balance loss); at inference the predicted expert runs. Here denoising
positives know their object before matching (they run π(c) and are
supervised in the router), matching queries after it (the model's matched
loss), and every other query runs the predicted expert.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gemlab.data.domain import Domain
from gemlab.data.mixture import DomainMixture
from gemlab.data.records import Category, Sample
from gemlab.engine.config import ConfigError, compose_config
from gemlab.engine.model import build_model, configured_router
from gemlab.engine.tasks.detection import DETECTION
from gemlab.models.common import ModelParts
from gemlab.models.detection.dino import build_dino
from gemlab.models.detection.structures import DetectionTargets
from gemlab.moe.layer import MoELayer
from gemlab.moe.registry import MoELayers, router_spec
from gemlab.moe.routers.class_gem import ClassGEMRouter
from gemlab.moe.routing import RoutingContext
from gemlab.moe.spec import RunFacts

CLASSES, EXPERTS, SIZE, QUERIES = 4, 2, 64, 10
TABLE = [1, 0, 0, 1]  # π: class -> expert
SMALL = {
    "backbone": "conv",
    "dim": 32,
    "hidden": 32,
    "heads": 2,
    "points": 2,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "num_queries": QUERIES,
    "dn_groups": 2,
}


class _Plan:
    """The two fields a router reads from a plan: class c goes to expert ``assignment[c]``."""

    def __init__(self, assignment: list[int], num_experts: int = EXPERTS) -> None:
        self.num_experts, self.assignment = num_experts, np.array(assignment)


def _model(router: str = "class_gem", seed: int = 0, **options):
    torch.manual_seed(seed)
    facts = RunFacts(num_experts=EXPERTS, num_domains=2, plan=_Plan(TABLE))
    moe = MoELayers(router_spec(router), facts, {})
    return build_dino(ModelParts(CLASSES, SIZE, moe), **{**SMALL, "experts_in": "ffn", **options})


def _targets(labels=((0, 3, 2), (1,))) -> DetectionTargets:
    boxes = [torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2], [0.5, 0.7, 0.2, 0.2]])[: len(c)] for c in labels]
    classes = [torch.tensor(c, dtype=torch.long) for c in labels]
    return DetectionTargets(boxes, classes, torch.ones(len(labels), CLASSES, dtype=torch.bool))


def _batch(batch: int = 2):
    torch.manual_seed(1)
    images = torch.randn(batch, 3, SIZE, SIZE)
    mask = torch.zeros(batch, SIZE, SIZE, dtype=torch.bool)
    mask[-1, :, 48:] = True
    return images, mask


def _record(model) -> list:
    """(FFN input (B, T, D), routing) of every decoder MoE layer call, appended as the model runs."""
    seen = []
    for layer in model.decoder.layers:
        layer.ffn.register_forward_hook(lambda _m, args, out: seen.append((args[0], out[1])))
    return seen


def _expert_of_each_token(routing, tokens: int) -> torch.Tensor:
    """(tokens,) the expert each token was dispatched to (-1: none), read from the routing's rows."""
    expert = torch.full((tokens,), -1)
    rows = routing.token_index if routing.token_index is not None else torch.arange(tokens)
    sizes = torch.tensor(routing.segment_sizes)
    expert[rows] = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    return expert


def _predicted(router, x: torch.Tensor) -> torch.Tensor:
    """The predictor's choice, computed here from its weights: argmax_e (W x + b)_e."""
    return (x @ router.predictor.weight.T + router.predictor.bias).argmax(dim=-1)


def _cross_entropy_towards_plan(router, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """mean_q -log softmax(W x_q + b)[π(c_q)], written out (rows of ``x`` are the queries, ``classes`` theirs)."""
    log_p = torch.log_softmax(x @ router.predictor.weight.T + router.predictor.bias, dim=-1)
    return torch.stack([-log_p[q, TABLE[c]] for q, c in enumerate(classes)]).mean()


# ---- the objective


def test_matched_loss_is_the_cross_entropy_of_each_matched_query_towards_its_class_expert():
    model = _model().train()
    seen = _record(model)
    targets = _targets()
    out = model(*_batch(), targets=targets)
    offset = out.layout.size
    # hand-made matches: (matching query indices, target indices) per image
    matches = [(torch.tensor([7, 2, 4]), torch.tensor([1, 2, 0])), (torch.tensor([9]), torch.tensor([0]))]
    losses = model.matched_routing_losses(out, matches, targets)
    assert sorted(losses) == ["matched_assignment"]

    # the denoising positives (a copy of every object in each group) are supervised by the router itself
    positives = [
        (b, int(slot), int(c))
        for b, labels in enumerate(targets.labels)
        for slot, c in zip(out.layout.positive_slots(len(labels)), labels.repeat(out.layout.groups), strict=True)
    ]
    expected, denoising = torch.zeros(()), torch.zeros(())
    for layer, (x, _) in zip(model.decoder.layers, seen, strict=True):  # each layer has its own predictor
        router = layer.ffn.router
        rows = torch.stack([x[b, offset + q] for b, (qs, _) in enumerate(matches) for q in qs.tolist()])
        classes = [int(targets.labels[b][j]) for b, (_, js) in enumerate(matches) for j in js.tolist()]
        expected = expected + _cross_entropy_towards_plan(router, rows, classes)
        rows = torch.stack([x[b, slot] for b, slot, _ in positives])
        denoising = denoising + _cross_entropy_towards_plan(router, rows, [c for _, _, c in positives])
    torch.testing.assert_close(losses["matched_assignment"], expected)
    torch.testing.assert_close(out.aux_losses["assignment"], denoising)
    assert sorted(out.aux_losses) == ["assignment"]  # and no balance loss

    losses["matched_assignment"].backward()
    for layer in model.decoder.layers:
        assert layer.ffn.router.predictor.weight.grad.abs().sum() > 0


def test_other_routers_and_dense_decoders_have_no_matched_loss():
    targets = _targets()
    for model in (_model("topk"), _model(experts_in="none")):
        out = model.train()(*_batch(), targets=targets)
        assert model.matched_routing_losses(out, [(torch.tensor([0]), torch.tensor([0]))] * 2, targets) == {}


# ---- which expert runs which query


def test_denoising_positives_run_their_class_expert_and_every_other_query_the_predicted_one():
    model = _model(label_noise=1.0).train()  # every positive's embedded label is redrawn: routing uses the true one
    seen = _record(model)
    targets, images = _targets(), _batch()
    out = model(*images, targets=targets)
    layout, length = out.layout, out.layout.size + QUERIES
    forced = 0
    for layer, (x, routing) in zip(model.decoder.layers, seen, strict=True):
        expert = _expert_of_each_token(routing, 2 * length).view(2, length)
        predicted = _predicted(layer.ffn.router, x)  # (2, length)
        known = torch.zeros(2, length, dtype=torch.bool)
        for b, labels in enumerate(targets.labels):
            slots = layout.positive_slots(len(labels))
            assert expert[b, slots].tolist() == [TABLE[c] for c in labels.tolist()] * layout.groups
            known[b, slots] = True
        assert torch.equal(expert[~known], predicted[~known])  # negatives, padding and matching queries
        assert torch.equal(routing.counts, torch.bincount(expert.flatten(), minlength=EXPERTS))
        forced += int((expert[known] != predicted[known]).sum())
    assert forced > 0  # the plan overruled the predictor somewhere: the test tells the two rules apart

    model.eval()
    seen.clear()
    with torch.no_grad():
        model(*images, targets=targets)
    for layer, (x, routing) in zip(model.decoder.layers, seen, strict=True):
        assert x.shape[1] == QUERIES  # no denoising queries in evaluation
        expert = _expert_of_each_token(routing, 2 * QUERIES).view(2, QUERIES)
        assert torch.equal(expert, _predicted(layer.ffn.router, x))


def test_a_batch_without_objects_routes_by_the_predictor_and_has_zero_class_losses():
    model = _model().train()
    targets = _targets(((), ()))
    out = model(*_batch(), targets=targets)
    assert out.layout is None
    losses = model.matched_routing_losses(out, [(torch.zeros(0, dtype=torch.long),) * 2] * 2, targets)
    assert out.aux_losses["assignment"].item() == 0.0 and losses["matched_assignment"].item() == 0.0
    (out.aux_loss + losses["matched_assignment"] + out.final.logits.sum()).backward()  # finite, no NaN
    with pytest.raises(ValueError, match="needs the class labels"):
        model(*_batch())  # training without targets: no class is known to route by


def test_class_router_keeps_classification_routing_and_takes_per_token_labels():
    torch.manual_seed(0)
    router = ClassGEMRouter(8, EXPERTS, TABLE, predictor_weight=0.5)
    tokens, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 3, 0])
    routing = router(tokens, RoutingContext((6, 1), labels=labels))  # every token labelled: as a classifier
    target = torch.tensor(TABLE)[labels]
    assert torch.equal(routing.aux_losses["assignment"], 0.5 * F.cross_entropy(router.predictor(tokens), target))
    assert torch.equal(_expert_of_each_token(routing, 6), target)

    layer = MoELayer(router=router, experts=MoELayers(router_spec("topk"), RunFacts(num_experts=EXPERTS))(8, 8).experts)
    x, token_labels = torch.randn(2, 3, 8), torch.tensor([[2, -1, 3], [-1, -1, 0]])
    _, routing = layer(x, token_labels=token_labels)
    expert = _expert_of_each_token(routing, 6)
    predicted = _predicted(router, x.reshape(6, 8))
    assert expert.tolist() == [TABLE[2], predicted[1], TABLE[3], predicted[3], predicted[4], TABLE[0]]
    known = torch.tensor([0, 2, 5])
    expected = 0.5 * _cross_entropy_towards_plan(router, x.reshape(6, 8)[known], [2, 3, 0])
    torch.testing.assert_close(routing.aux_losses["assignment"], expected)
    with pytest.raises(ValueError, match="not both"):
        layer(x, labels=torch.tensor([0, 1]), token_labels=token_labels)
    with pytest.raises(ValueError, match="one per token"):
        layer(x, token_labels=token_labels[:, :2])


# ---- through the engine


def _domain(name: str, categories: tuple[str, ...]) -> Domain:
    cats = tuple(Category(i + 1, c) for i, c in enumerate(categories))
    samples = tuple(
        Sample(Path(f"/{name}/{i}.png"), 32, 32, i + 1, ((1.0, 1.0, 4.0, 4.0),), (cats[i % len(cats)].id,))
        for i in range(4)
    )
    return Domain(name, "detection", cats, {"train": samples, "val": samples[:2]})


def test_class_level_gem_dino_builds_through_the_engine_and_trains_its_predictor():
    sizes = [f"model.{key}={value}" for key, value in SMALL.items()]
    cfg = compose_config(["experiment=uodb_mini_class", "router=class_gem", "moe.num_experts=2", *sizes])
    assert (cfg.plan.level, cfg.model.experts_in) == ("class", "ffn")
    mixture = DomainMixture([_domain("a", ("car", "person")), _domain("b", ("sign", "car"))])  # car, person, sign
    model = build_model(cfg, mixture, _Plan([1, 0, 1])).train()
    assert [layer.ffn.router.table.tolist() for layer in model.decoder.layers] == [[1, 0, 1]] * 2

    images, mask = _batch()
    targets = DetectionTargets(
        [torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2]]), torch.tensor([[0.5, 0.5, 0.4, 0.4]])],
        [torch.tensor([0, 1]), torch.tensor([2])],
        torch.tensor([[True, True, False], [True, False, True]]),
    )
    batch = {"images": images, "mask": mask, "targets": targets, "domain": torch.tensor([0, 1])}
    loss, stats = DETECTION.loss(model, batch)
    loss.backward()
    assert math.isfinite(loss.item()) and stats["aux/matched_assignment"] > 0 and stats["aux/assignment"] > 0
    for layer in model.decoder.layers:
        assert layer.ffn.router.predictor.weight.grad.abs().sum() > 0


def test_the_class_level_experiment_refuses_a_domain_level_router():
    cfg = compose_config(["experiment=uodb_mini_class"])
    assert (cfg.tag, cfg.moe.num_experts, cfg.plan.level) == ("uodb_mini_class", 6, "class")
    with pytest.raises(ConfigError, match="plan"):
        configured_router(cfg)  # router=class_gem must be named on the command line (see the experiment's file)
