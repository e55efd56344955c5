"""MoGE (seed 001) against direct transcriptions of its equations: Eq. 1, 2, 3, Appendix A, the encoders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gemlab.engine.cross_expert import forced_expert
from gemlab.models.vit import MoEViT
from gemlab.moe.location_encoding import fourier_encoding, spherical_harmonics
from gemlab.moe.losses import cka_diversity_loss
from gemlab.moe.moge_losses import importance_loss, load_loss, moge_aux_loss, moge_supcon_loss
from gemlab.moe.registry import MoELayers, router_spec
from gemlab.moe.routers.metadata import MetadataRouter
from gemlab.moe.routing import RoutingContext
from gemlab.moe.spec import RunFacts
from helpers import moge_layer

DIM = 12
SITES = torch.tensor([[0.0, 0.0], [45.0, 90.0], [-45.0, -90.0], [10.0, 10.0]])


def _moge(**options):
    return moge_layer(DIM, **options)


# ------------------------------------------------------------------------------------------ Eq. 1
def test_eq1_the_shared_expert_and_the_routed_mixture_are_mixed_convexly():
    router, layer = _moge()
    layer.eval()
    x = torch.randn(4, 3, DIM)
    y, _ = layer(x, metadata=SITES)
    gamma = torch.sigmoid(router.gamma).item()
    scores = router.scores(SITES)  # (B, E) cosine scores s_k
    for b in range(4):
        top = sorted(range(4), key=lambda e: -scores[b, e].item())[:2]  # the top K = 2 experts
        exps = [math.exp(scores[b, e].item() / router.temperature) for e in top]
        alpha = {e: v / sum(exps) for e, v in zip(top, exps, strict=True)}  # softmax over the top K of s / τ
        for t in range(3):
            token = x[b, t : t + 1]
            routed = sum(alpha[e] * layer.experts.run_one(e, token) for e in top)
            expected = gamma * layer.shared_expert(token) + (1 - gamma) * routed
            torch.testing.assert_close(y[b, t : t + 1], expected, rtol=1e-5, atol=1e-6)


def test_unseen_metadata_fallback_and_mogese_use_the_shared_expert_alone():
    router, layer = _moge()
    x = torch.randn(2, 5, DIM)
    y, routing = layer.eval()(x, metadata=torch.tensor([[10.0, 20.0], [float("nan"), 0.0]]))
    torch.testing.assert_close(y[1], layer.shared_expert(x[1]))  # sample 1: γ = 1
    assert routing.shared_weight[:5].unique().item() == pytest.approx(torch.sigmoid(router.gamma).item())
    with router.shared_expert_only():
        y, routing = layer(x, metadata=SITES[:2])
    assert sum(routing.segment_sizes) == 0
    torch.testing.assert_close(y, layer.shared_expert(x))
    assert not router.fallback  # restored
    _, fallback_layer = _moge(fallback=True)
    torch.testing.assert_close(fallback_layer(x)[0], fallback_layer.shared_expert(x))


def test_without_the_shared_expert_the_layer_is_the_routed_mixture_alone():
    facts = RunFacts(num_experts=4, metadata_columns={"a": ("lat", "lon")})
    torch.manual_seed(0)
    layer = MoELayers(router_spec("metadata"), facts, {"k": 2, "shared_expert": False})(DIM, 16)
    assert layer.shared_expert is None
    x = torch.randn(4, 3, DIM)
    y, routing = layer.eval()(x, metadata=SITES)
    alpha = torch.zeros(4 * 3, 4)
    experts = torch.repeat_interleave(torch.arange(4), torch.tensor(routing.segment_sizes))
    alpha[routing.token_index, experts] = routing.weight
    tokens = x.reshape(-1, DIM)
    expected = sum(alpha[:, e : e + 1] * layer.experts.run_one(e, tokens) for e in range(4))
    torch.testing.assert_close(y.reshape(-1, DIM), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no shared expert"):
        layer.router.shared_expert_only()
    with pytest.raises(ValueError, match="shared_expert=False"):
        MetadataRouter(DIM, 4, shared_expert=False, fallback=True)


def test_routing_is_per_image_and_noisy_only_in_training():
    router, _ = _moge(noise_std=0.5)
    context = RoutingContext.for_batch((4, 3), metadata=SITES)
    router.eval()
    a, b = router(torch.randn(12, DIM), context), router(torch.randn(12, DIM), context)
    assert a.counts.tolist() == b.counts.tolist()
    torch.testing.assert_close(a.weight, b.weight)
    rows = [a.token_index[a.token_index == i].numel() for i in range(12)]
    assert rows == [2] * 12  # every token to K = 2 experts
    for image in range(4):  # the three tokens of an image share its experts and weights
        chosen = [sorted(a.token_index.eq(image * 3 + t).nonzero().flatten().tolist()) for t in range(3)]
        weights = [a.weight[c].tolist() for c in chosen]
        assert weights[0] == weights[1] == weights[2]
    router.train()
    torch.manual_seed(1)
    noisy = [router(torch.randn(12, DIM), context).weight for _ in range(2)]
    assert not torch.allclose(noisy[0], noisy[1])


def test_forcing_an_expert_sends_every_image_there_and_restores():
    router, layer = _moge()
    model = torch.nn.ModuleDict({"layer": layer})
    x = torch.randn(4, 3, DIM)
    with forced_expert(model, 2):
        y, routing = layer.eval()(x, metadata=SITES)
    assert routing.counts.tolist() == [0, 0, 12, 0]
    gamma = torch.sigmoid(router.gamma)
    tokens = x.reshape(-1, DIM)
    expected = gamma * layer.shared_expert(tokens) + (1 - gamma) * layer.experts.run_one(2, tokens)
    torch.testing.assert_close(y.reshape(-1, DIM), expected)
    assert router._forced is None
    with pytest.raises(ValueError, match="cannot force expert 4"), forced_expert(model, 4):
        pass


# ------------------------------------------------------------------------------------------ Eq. 2
def test_eq2_cka_diversity_is_the_mean_feature_space_linear_cka_over_expert_pairs():
    torch.manual_seed(0)
    outputs = [torch.randn(10, 6, dtype=torch.float64) for _ in range(4)]

    def cka_lin(hi, hj):  # Eq. 2 as written: column-centred H, Frobenius norms of the cross-products
        hi, hj = hi - hi.mean(0), hj - hj.mean(0)
        return (hi.t() @ hj).norm() ** 2 / ((hi.t() @ hi).norm() * (hj.t() @ hj).norm())

    e = len(outputs)
    pairs = sum(cka_lin(outputs[i], outputs[j]) for i in range(e) for j in range(i + 1, e))
    assert cka_diversity_loss(outputs).item() == pytest.approx((2 / (e * (e - 1)) * pairs).item(), rel=1e-9)


# ------------------------------------------------------------------------------------------ Eq. 3
def _supcon_transcribed(features, labels, domains, tau):
    """MoGE Eq. 3 written out: sums over explicit positive and negative sets, anchors with both."""
    q = F.normalize(features, dim=-1).tolist()
    n = len(q)

    def sim(i, j):
        return sum(a * b for a, b in zip(q[i], q[j], strict=True)) / tau

    total, anchors = 0.0, 0
    for i in range(n):
        pos = [j for j in range(n) if labels[j] == labels[i] and domains[j] != domains[i]]
        neg = [j for j in range(n) if labels[j] != labels[i] and domains[j] == domains[i]]
        if not pos or not neg:
            continue
        numerator = sum(math.exp(sim(i, p)) for p in pos)
        denominator = sum(math.exp(sim(i, v)) for v in pos + neg)
        total += math.log(numerator) - math.log(denominator)
        anchors += 1
    return -total / anchors


def test_eq3_supcon_against_its_transcription():
    torch.manual_seed(0)
    features = torch.randn(9, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 0, 1, 2, 2])
    domains = torch.tensor([0, 1, 0, 1, 0, 2, 2, 1, 3])  # sample 8 has no negative: not an anchor
    value = moge_supcon_loss(features, labels, domains, temperature=0.2)
    assert value.item() == pytest.approx(_supcon_transcribed(features, labels, domains, 0.2), rel=1e-9)
    # no valid anchor (one domain: no positives): zero, with a gradient path
    features.requires_grad_(True)
    zero = moge_supcon_loss(features, labels, torch.zeros(9, dtype=torch.long))
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="temperature"):
        moge_supcon_loss(features, labels, domains, temperature=0.0)


def test_the_layer_contrasts_pooled_shared_features_by_discovered_domain():
    router, layer = _moge(supcon_weight=0.5, supcon_temperature=0.2)
    layer.train()
    x = torch.randn(4, 3, DIM)
    labels = torch.tensor([0, 0, 1, 1])
    _, routing = layer(x, labels=labels, metadata=SITES)  # no dataset domain ids needed
    pooled = layer.shared_expert(x.reshape(-1, DIM)).reshape(4, 3, DIM).mean(dim=1)
    discovered = router.scores(SITES).argmax(dim=1)  # d_i = argmax_k α_k
    expected = 0.5 * moge_supcon_loss(pooled, labels, discovered, temperature=0.2)
    torch.testing.assert_close(routing.aux_losses["supcon"], expected)
    routing.aux_losses["supcon"].backward()  # the term trains the shared expert, not the routed experts
    assert layer.shared_expert[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in layer.experts.parameters())
    assert "supcon" not in layer(x, metadata=SITES)[1].aux_losses  # evaluation passes no labels
    assert "supcon" not in layer.eval()(x, labels=labels, metadata=SITES)[1].aux_losses


# ----------------------------------------------------------------------------------- Appendix A
def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _cv2(values: list[float]) -> float:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return (std / mean) ** 2


def test_appendix_a_importance_load_and_aux_against_their_transcriptions():
    torch.manual_seed(0)
    scores = torch.rand(7, 5, dtype=torch.float64) * 2 - 1
    k, sigma = 2, 0.3
    alpha = torch.zeros_like(scores)
    top = scores.topk(k, dim=1)
    alpha.scatter_(1, top.indices, (top.values / 0.1).softmax(dim=1))
    imp = [sum(alpha[i, e].item() for i in range(7)) for e in range(5)]
    load = []
    for e in range(5):
        total = 0.0
        for i in range(7):
            eta = sorted(scores[i].tolist(), reverse=True)[k - 1]  # the K-th largest score of sample i
            total += 1 - _phi((eta - scores[i, e].item()) / sigma)
        load.append(total)
    assert importance_loss(alpha).item() == pytest.approx(_cv2(imp), rel=1e-9)
    assert load_loss(scores, k, sigma).item() == pytest.approx(_cv2(load), rel=1e-9)
    assert moge_aux_loss(alpha, scores, k, sigma).item() == pytest.approx(0.5 * (_cv2(imp) + _cv2(load)), rel=1e-9)
    uniform = torch.full((4, 3), 1 / 3)
    assert importance_loss(uniform).item() == 0.0
    with pytest.raises(ValueError, match="noise_std"):
        load_loss(scores, k, 0.0)


def test_the_router_weighs_the_aux_loss_of_its_routing():
    router, layer = _moge(balance_weight=0.01, noise_std=0.2)
    router.eval()  # no gate noise: α is the clean top-K softmax
    _, routing = layer.eval()(torch.randn(4, 3, DIM), metadata=SITES)
    scores = router.scores(SITES)
    top = (scores / router.temperature).topk(2, dim=1)
    alpha = torch.zeros_like(scores).scatter(1, top.indices, top.values.softmax(dim=1))
    torch.testing.assert_close(routing.aux_losses["balance"], 0.01 * moge_aux_loss(alpha, scores, 2, 0.2))


# -------------------------------------------------------------------------------------- encoders
def test_spherical_harmonics_are_orthonormal_on_the_sphere():
    degree = 12
    nodes, weights = np.polynomial.legendre.leggauss(degree + 2)  # exact in cos θ for these degrees
    azimuths = 2 * degree + 2
    lat = 90 - np.degrees(np.arccos(nodes))
    lon = np.degrees(np.arange(azimuths) * 2 * math.pi / azimuths)
    grid = np.stack(np.meshgrid(lat, lon, indexing="ij"), axis=-1).reshape(-1, 2)
    area = np.outer(weights, np.full(azimuths, 2 * math.pi / azimuths)).reshape(-1)
    y = spherical_harmonics(torch.tensor(grid, dtype=torch.float64), degree).numpy()
    gram = (y * area[:, None]).T @ y
    np.testing.assert_allclose(gram, np.eye(degree**2), atol=1e-10)


def test_low_degree_spherical_harmonics_match_their_closed_forms():
    latlon = torch.tensor([[30.0, 40.0], [-60.0, 200.0], [90.0, 0.0]], dtype=torch.float64)
    theta, phi = torch.deg2rad(90 - latlon[:, 0]), torch.deg2rad(latlon[:, 1])
    c = math.sqrt(3 / (4 * math.pi))
    closed = {
        (0, 0): torch.full_like(theta, 0.5 / math.sqrt(math.pi)),
        (1, -1): c * theta.sin() * phi.sin(),
        (1, 0): c * theta.cos(),
        (1, 1): c * theta.sin() * phi.cos(),
        (2, 0): 0.25 * math.sqrt(5 / math.pi) * (3 * theta.cos() ** 2 - 1),
        (2, 1): 0.5 * math.sqrt(15 / math.pi) * theta.sin() * theta.cos() * phi.cos(),
        (2, -2): 0.25 * math.sqrt(15 / math.pi) * theta.sin() ** 2 * (2 * phi).sin(),
        (2, 2): 0.25 * math.sqrt(15 / math.pi) * theta.sin() ** 2 * (2 * phi).cos(),
    }
    y = spherical_harmonics(latlon, 3)
    assert y.shape == (3, 9)
    for (ell, m), expected in closed.items():
        torch.testing.assert_close(y[:, ell * ell + ell + m], expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="degree"):
        spherical_harmonics(latlon, 0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        spherical_harmonics(latlon[:, :1], 3)


def test_fourier_encoding_columns():
    encoded = fourier_encoding(torch.tensor([[90.0, 0.0]]), frequencies=2)
    # per column: sin(1 a), sin(2 a), cos(1 a), cos(2 a); latitude 90 degrees, then longitude 0
    torch.testing.assert_close(encoded[0], torch.tensor([1.0, 0.0, 0.0, -1.0, 0.0, 0.0, 1.0, 1.0]), atol=1e-6, rtol=0)


def test_the_spherical_harmonics_router_trains_end_to_end():
    router, layer = _moge(encoder="spherical_harmonics", degree=10, cka_weight=0.1, supcon_weight=0.1)
    assert router.encoder.in_features == 100  # SatCLIP's L = 10: 10² harmonics
    x = torch.randn(4, 3, DIM, requires_grad=True)
    y, routing = layer.train()(x, metadata=SITES, labels=torch.tensor([0, 0, 1, 1]))
    assert set(routing.aux_losses) == {"balance", "cka", "supcon"}
    (y.sum() + sum(routing.aux_losses.values())).backward()
    assert router.encoder.weight.grad.abs().sum() > 0 and router.gamma.grad is not None
    with pytest.raises(ValueError, match="needs 2 metadata columns"):
        MetadataRouter(DIM, 4, metadata_dim=3, encoder="spherical_harmonics")
    with pytest.raises(ValueError, match="encoder must be one of"):
        MetadataRouter(DIM, 4, encoder="satclip")


# -------------------------------------------------------------------------------- block layout
def test_moe_blocks_place_the_moge_layers_and_the_default_keeps_every_other_block():
    facts = RunFacts(num_experts=3, metadata_columns={"a": ("lat", "lon")})
    moe = MoELayers(router_spec("metadata"), facts, {"k": 2})

    def kinds(**options):
        torch.manual_seed(0)
        model = MoEViT(num_classes=3, moe=moe, image_size=8, dim=DIM, depth=4, heads=2, **options)
        return model, [type(block.ffn).__name__ for block in model.blocks]

    default, layout = kinds()
    assert layout == ["Sequential", "MoELayer", "Sequential", "MoELayer"]
    explicit, same = kinds(moe_blocks=[1, 3])
    assert same == layout
    pairs = zip(default.state_dict().values(), explicit.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    _, last = kinds(moe_blocks=[3])
    assert last == ["Sequential", "Sequential", "Sequential", "MoELayer"]
    for bad in ([], [4], [1, 1]):
        with pytest.raises(ValueError, match="moe_blocks"):
            kinds(moe_blocks=bad)
