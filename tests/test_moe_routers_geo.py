"""Metadata (MoGE), confidence (DQRoute) and STAR routing against their definitions."""

import pytest
import torch
from torch.nn import functional as F

from gemlab.moe.experts import Experts
from gemlab.moe.layer import MoELayer
from gemlab.moe.losses import ood_bce_loss
from gemlab.moe.routers.confidence import ConfidenceRouter, DifficultyWeights, class_groups
from gemlab.moe.routers.metadata import MetadataRouter, fourier_encoding, shared_expert_contrast
from gemlab.moe.routing import RoutingContext
from gemlab.moe.star import STARHeads, canonical_correlation

DIM = 12


def _moge(**options):
    torch.manual_seed(0)
    router = MetadataRouter(DIM, 4, k=2, **options)
    experts = Experts(4, DIM, 16)
    shared = torch.nn.Sequential(torch.nn.Linear(DIM, DIM), torch.nn.GELU())
    return router, MoELayer(router=router, experts=experts, shared_expert=shared)


def test_metadata_routing_depends_only_on_the_metadata():
    router, _ = _moge()
    metadata = torch.tensor([[51.5, -0.1], [51.5, -0.1], [-33.9, 151.2]])
    a = router(torch.randn(3, DIM), RoutingContext((3, 1), metadata=metadata))
    b = router(torch.randn(3, DIM), RoutingContext((3, 1), metadata=metadata))
    assert a.counts.tolist() == b.counts.tolist()
    torch.testing.assert_close(a.weight, b.weight)
    rows = [a.token_index[a.token_index == i].numel() for i in range(3)]
    assert rows == [2, 2, 2]  # k = 2 experts each


def test_unseen_metadata_and_fallback_use_the_shared_expert_alone():
    router, layer = _moge()
    x = torch.randn(2, 5, DIM)
    metadata = torch.tensor([[10.0, 20.0], [float("nan"), 0.0]])
    y, routing = layer(x, metadata=metadata)
    tokens = x.reshape(-1, DIM)
    torch.testing.assert_close(y[1], layer.shared_expert(tokens[5:]))  # sample 1: shared expert, weight 1
    assert routing.shared_weight[:5].unique().item() == pytest.approx(torch.sigmoid(router.gamma).item())
    _, fallback_layer = _moge(fallback=True)
    y, routing = fallback_layer(x)
    assert sum(routing.segment_sizes) == 0
    torch.testing.assert_close(y, fallback_layer.shared_expert(x))


def test_moge_auxiliary_terms_and_gradients():
    router, layer = _moge(cka_weight=0.1, balance_weight=0.01)
    layer.train()
    x = torch.randn(4, 6, DIM, requires_grad=True)
    metadata = torch.tensor([[0.0, 0.0], [45.0, 90.0], [-45.0, -90.0], [10.0, 10.0]])
    y, routing = layer(x, metadata=metadata)
    assert set(routing.aux_losses) == {"balance", "cka"}
    assert all(torch.isfinite(v) for v in routing.aux_losses.values())
    (y.sum() + sum(routing.aux_losses.values())).backward()
    assert x.grad.abs().sum() > 0 and router.keys.grad.abs().sum() > 0 and router.gamma.grad is not None
    y2, _ = layer(torch.randn(4, DIM), metadata=metadata)  # pooled (B, D) features
    assert y2.shape == (4, DIM)


def test_fourier_encoding_and_shared_contrast_masks():
    encoded = fourier_encoding(torch.tensor([[90.0, 0.0]]), frequencies=2)
    # per column: sin(1 a), sin(2 a), cos(1 a), cos(2 a); latitude 90 degrees, then longitude 0
    torch.testing.assert_close(encoded[0], torch.tensor([1.0, 0.0, 0.0, -1.0, 0.0, 0.0, 1.0, 1.0]), atol=1e-6, rtol=0)
    torch.manual_seed(0)
    features = torch.randn(4, 5)
    labels, domains = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    loss = shared_expert_contrast(features, labels, domains)
    # by hand: anchor 0 has positive 1 (same class, other domain) and negative 2 (other class, same domain)
    z = F.normalize(features, dim=-1)
    total = 0.0
    for i, (p, n) in enumerate([(1, 2), (0, 3), (3, 0), (2, 1)]):
        total += -(z[i] @ z[p] / 0.1 - torch.logsumexp(torch.stack([z[i] @ z[p], z[i] @ z[n]]) / 0.1, 0))
    assert loss.item() == pytest.approx(total.item() / 4, rel=1e-5)


def test_moge_supcon_is_the_contrast_of_the_pooled_shared_expert_features():
    _, layer = _moge(supcon_weight=0.5, supcon_temperature=0.2)
    layer.train()
    x = torch.randn(4, 3, DIM)
    metadata = torch.tensor([[0.0, 0.0], [45.0, 90.0], [-45.0, -90.0], [10.0, 10.0]])
    labels, domains = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    _, routing = layer(x, labels=labels, domain=domains, metadata=metadata)
    pooled = layer.shared_expert(x.reshape(-1, DIM)).reshape(4, 3, DIM).mean(dim=1)
    expected = 0.5 * shared_expert_contrast(pooled, labels, domains, temperature=0.2)
    torch.testing.assert_close(routing.aux_losses["supcon"], expected)
    routing.aux_losses["supcon"].backward()  # the term trains the shared expert, not the routed experts
    assert layer.shared_expert[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in layer.experts.parameters())
    for absent in ({"labels": labels}, {"domain": domains}):  # evaluation passes no labels
        assert "supcon" not in layer(x, metadata=metadata, **absent)[1].aux_losses
    layer.eval()
    assert "supcon" not in layer(x, labels=labels, domain=domains, metadata=metadata)[1].aux_losses
    _, plain = _moge()
    assert "supcon" not in plain.train()(x, labels=labels, domain=domains, metadata=metadata)[1].aux_losses
    with pytest.raises(ValueError, match="supcon_weight"):
        MetadataRouter(DIM, 4, supcon_weight=-1.0)
    with pytest.raises(ValueError, match="supcon_temperature=0"):
        MetadataRouter(DIM, 4, supcon_temperature=0)


def test_confidence_router_weights_are_normalised_confidences():
    torch.manual_seed(0)
    groups = class_groups([100, 50, 10, 3, 2], medium_threshold=50, tail_threshold=3)
    assert groups == [[0, 1, 2, 3, 4], [1, 2, 3, 4], [3, 4]]
    router = ConfidenceRouter(DIM, 3, groups, num_classes=5, ood_weight=0.5).train()
    tokens, labels = torch.randn(6, DIM), torch.tensor([0, 1, 2, 3, 4, 3])
    routing = router(tokens, RoutingContext((6, 1), labels=labels))
    alpha = torch.zeros(6, 3)
    alpha[routing.token_index, torch.repeat_interleave(torch.arange(3), torch.tensor(routing.segment_sizes))] = (
        routing.weight
    )
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(6))
    scores = torch.sigmoid(router.ood_heads(tokens))
    torch.testing.assert_close(alpha, scores / scores.sum(1, keepdim=True))
    member = torch.tensor([[c in g for g in groups] for c in labels.tolist()], dtype=torch.float32)
    torch.testing.assert_close(routing.aux_losses["ood"], 0.5 * ood_bce_loss(scores, member))
    layer = MoELayer(router=router, experts=Experts(3, DIM, 8))
    y, _ = layer(torch.randn(2, 3, DIM), labels=torch.tensor([0, 4]))
    assert y.shape == (2, 3, DIM)


def test_difficulty_weights_favour_hard_classes():
    weights = DifficultyWeights([10, 10, 10], gamma=2.0, momentum=0.0, alpha=1.0)
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0]])  # class 2 is always wrong
    weights.update(logits, torch.tensor([0, 1, 2]))
    w = weights.weights()
    assert w[2] > w[0] and w[0] == pytest.approx(w[1].item())
    d = (1 - weights.accuracy) + weights.entropy
    expected = torch.exp(2.0 * d) / torch.exp(2.0 * d).mean()
    torch.testing.assert_close(w, expected / expected.mean())
    rare = DifficultyWeights([100, 1], alpha=0.0).weights()
    assert rare[1] > rare[0]
    with pytest.raises(ValueError, match="momentum"):
        DifficultyWeights([1], momentum=1.0)


def test_difficulty_weights_as_a_loss_weigh_the_batch_then_learn_from_it():
    criterion = DifficultyWeights([10, 10, 10], gamma=2.0, momentum=0.5)
    logits, labels = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0]]), torch.tensor([0, 1, 2])
    expected = F.cross_entropy(logits, labels, weight=criterion.weights())  # the weights before this batch
    torch.testing.assert_close(criterion(logits, labels), expected)
    assert criterion.accuracy.tolist() == pytest.approx([0.5, 0.5, 0.0])  # then the batch is folded in
    assert {"quantity", "accuracy", "entropy"} <= set(criterion.state_dict())  # checkpointed with its model


def test_star_gives_two_task_embeddings_and_canonical_correlation_behaves():
    torch.manual_seed(0)
    heads = STARHeads(DIM, 6, num_heads=3, hidden=16)
    out = heads(torch.randn(8, DIM))
    (z_inv, w_inv), (z_eq, _) = out["invariant"], out["equivariant"]
    assert z_inv.shape == z_eq.shape == (8, 6) and not torch.allclose(z_inv, z_eq)
    torch.testing.assert_close(w_inv.sum(1), torch.ones(8))
    z = torch.randn(4000, 3)
    mixed = z @ torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 3.0]])
    assert canonical_correlation(z, mixed).item() == pytest.approx(1.0, abs=1e-3)
    assert canonical_correlation(z, torch.randn(4000, 3)).item() < 0.05


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MetadataRouter(DIM, 4, k=5), "need k in 1..4"),
        (lambda: MetadataRouter(DIM, 4, cka_weight=-1), "cka_weight"),
        (lambda: ConfidenceRouter(DIM, 2, [[0]], num_classes=2), "1 class groups for 2 experts"),
        (lambda: ConfidenceRouter(DIM, 1, [[5]], num_classes=2), "outside 0..1"),
        (lambda: STARHeads(DIM, 4, num_heads=1), "at least 2"),
        (lambda: class_groups([1, 2], medium_threshold=1, tail_threshold=2), "tail_threshold 2 > medium_threshold 1"),
    ],
)
def test_bad_options(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


def test_metadata_router_needs_metadata():
    _, layer = _moge()
    with pytest.raises(ValueError, match="needs per-sample metadata"):
        layer(torch.randn(2, DIM))
