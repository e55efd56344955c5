"""REMoE, DAMEX and random routers, and the losses of the remaining families, against their definitions."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gemlab.moe.experts import Experts
from gemlab.moe.layer import MoELayer
from gemlab.moe.losses import (
    cka,
    cka_diversity_loss,
    coral_loss,
    l1_gate_loss,
)
from gemlab.moe.registry import ROUTERS, build_router
from gemlab.moe.routers.damex import DAMEXRouter
from gemlab.moe.routers.random_router import random_table
from gemlab.moe.routers.relu import ReLURouter
from gemlab.moe.routing import RoutingContext
from gemlab.moe.spec import RunFacts

DIM = 12


# --------------------------------------------------------------------------------------------- relu
def test_relu_router_sends_tokens_to_every_positive_gate_and_none_when_all_zero():
    router = ReLURouter(DIM, 4, k=2)
    with torch.no_grad():
        router.gate.weight.copy_(torch.eye(4, DIM))
    tokens = torch.zeros(3, DIM)
    tokens[0, :4] = torch.tensor([1.0, -1.0, 2.0, 0.5])  # experts 0, 2, 3
    tokens[1, :4] = -1.0  # no expert at all
    tokens[2, 1] = 3.0  # expert 1
    routing = router.eval()(tokens, RoutingContext((3, 1)))
    assert routing.counts.tolist() == [1, 1, 1, 1]
    layer = MoELayer(router=router, experts=Experts(4, DIM, 8))
    y, _ = layer(tokens)
    assert torch.all(y[1] == 0)  # a token no expert takes contributes nothing (the block's residual carries it)


def test_relu_l1_weight_adapts_towards_the_target_sparsity():
    router = ReLURouter(DIM, 4, k=1, l1_weight=0.01, alpha=2.0).train()
    dense_tokens = torch.ones(8, DIM)
    with torch.no_grad():
        router.gate.weight.fill_(0.1)  # every gate positive: sparsity 0 < target 0.75
    routing = router(dense_tokens, RoutingContext((8, 1)))
    assert router.l1_weight.item() == pytest.approx(0.01)  # the step's loss uses λ_i ...
    assert routing.aux_losses["l1"].item() == pytest.approx(0.01 * l1_gate_loss(router.gate(dense_tokens)).item())
    router.update_state()  # ... and λ_{i+1} follows once the step is done
    assert router.l1_weight.item() == pytest.approx(0.02)
    router(-dense_tokens, RoutingContext((8, 1)))  # every gate zero: sparsity 1 > target
    router.update_state()
    assert router.l1_weight.item() == pytest.approx(0.01)
    router.eval()(dense_tokens, RoutingContext((8, 1)))
    router.update_state()
    assert router.l1_weight.item() == pytest.approx(0.01)  # no adaptation outside training


def test_relu_l1_update_against_remoe_written_out():
    """REMoE §3.3: λ_{i+1} = λ_i · α^sign(τ − S_i), τ = 1 − k/E, S_i the share of zero gates of step i (both
    forwards of a step count), written out with Python numbers."""
    torch.manual_seed(3)
    router = ReLURouter(DIM, 4, k=2, l1_weight=0.05, alpha=1.5).train()
    batches = [torch.randn(7, DIM), torch.randn(5, DIM) + 0.4]
    lam = 0.05
    for _ in range(3):
        zeros = total = 0
        for tokens in batches:
            router(tokens, RoutingContext((tokens.shape[0], 1)))
            for row in torch.relu(router.gate(tokens)).tolist():
                zeros += sum(g == 0 for g in row)
                total += len(row)
        router.update_state()
        sparsity, target = zeros / total, 1 - 2 / 4
        lam *= 1.5 ** ((target > sparsity) - (target < sparsity))
        assert router.l1_weight.item() == pytest.approx(lam, rel=1e-6)


def test_l1_loss_against_its_formula():
    gates = torch.relu(torch.randn(5, 3))
    assert l1_gate_loss(gates).item() == pytest.approx(sum(float(v) for v in gates.flatten()) / 5, rel=1e-6)


# -------------------------------------------------------------------------------------------- damex
def test_damex_loss_is_cross_entropy_to_the_domains_expert():
    torch.manual_seed(0)
    router = DAMEXRouter(DIM, 3, table=[2, 0], damex_weight=0.5).train()
    tokens, domain = torch.randn(6, DIM), torch.tensor([0, 0, 1, 1, 0, 1])
    routing = router(tokens, RoutingContext((6, 1), domain=domain))
    expected = 0.5 * F.cross_entropy(router.topk.gate(tokens), torch.tensor([2, 2, 0, 0, 2, 0]))
    torch.testing.assert_close(routing.aux_losses["damex"], expected)
    assert {"balance", "z"} <= set(routing.aux_losses)
    with pytest.raises(ValueError, match="needs the domain id"):
        router(tokens, RoutingContext((6, 1)))


def test_damex_training_sends_each_domain_to_its_expert():
    torch.manual_seed(0)
    table, centres = [1, 3, 0], torch.randn(3, DIM) * 2
    router = DAMEXRouter(DIM, 4, table=table, damex_weight=1.0, balance_weight=0.0).train()
    optimiser = torch.optim.SGD(router.parameters(), lr=0.5)
    for _ in range(100):
        domain = torch.randint(0, 3, (96,))
        routing = router(centres[domain] + torch.randn(96, DIM) * 0.5, RoutingContext((96, 1), domain=domain))
        optimiser.zero_grad()
        routing.aux_losses["damex"].backward()
        optimiser.step()
    domain = torch.randint(0, 3, (300,))
    chosen = router.topk.gate(centres[domain] + torch.randn(300, DIM) * 0.5).argmax(-1)
    assert (chosen == torch.tensor(table)[domain]).float().mean() > 0.9


# ------------------------------------------------------------------------------------------- random
def test_random_router_is_seeded_and_respects_capacity():
    table = random_table(num_domains=12, num_experts=8, capacity=2, seed=4)
    assert table == random_table(12, 8, 2, seed=4)
    assert table != random_table(12, 8, 2, seed=5)
    assert max(np.bincount(table)) <= 2 and len(table) == 12
    facts = RunFacts(num_experts=8, num_domains=12, capacity=2, seed=4)
    assert build_router("random", DIM, facts).table.tolist() == table == ROUTERS["random"].domain_table(facts)
    with pytest.raises(ValueError, match="cannot hold 12 domains"):
        random_table(12, 4, 2, seed=0)
    with pytest.raises(ValueError, match="needs a capacity"):
        build_router("random", DIM, RunFacts(num_experts=8, num_domains=12))


# --------------------------------------------------------------------------------------- every one
@pytest.mark.parametrize(
    ("name", "options"),
    [("relu", {"k": 2}), ("random", {}), ("damex", {})],
)
@pytest.mark.parametrize("shape", [(3, 5, DIM), (3, DIM)])
def test_shapes_and_gradients(name, options, shape):
    torch.manual_seed(0)

    class Plan:  # the two fields a router reads from a plan
        num_experts = 4
        assignment = np.array([1, 0, 3])

    router = build_router(name, DIM, RunFacts(num_experts=4, num_domains=3, capacity=1, plan=Plan()), **options)
    layer = MoELayer(router=router, experts=Experts(4, DIM, 16))
    x = torch.randn(*shape, requires_grad=True)
    y, routing = layer(x, domain=torch.tensor([0, 1, 2]))
    assert y.shape == x.shape
    (y.sum() + sum(routing.aux_losses.values(), torch.zeros(()))).backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ReLURouter(DIM, 4, k=0), "k must be in 1..4"),
        (lambda: ReLURouter(DIM, 4, alpha=1.0), "alpha > 1"),
        (lambda: DAMEXRouter(DIM, 2, table=[0, 2]), "experts 0..1"),
        (lambda: DAMEXRouter(DIM, 2, table=[0, 1], damex_weight=-1), "damex_weight must be a finite number >= 0"),
    ],
)
def test_bad_options(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


# ------------------------------------------------------------------------------------------- losses
def _direct_cka(x, y):
    n = x.shape[0]
    h = torch.eye(n, dtype=x.dtype) - torch.ones(n, n, dtype=x.dtype) / n
    kx, ky = h @ x @ x.t() @ h, h @ y @ y.t() @ h
    return (torch.trace(kx @ ky) / torch.sqrt(torch.trace(kx @ kx) * torch.trace(ky @ ky))).item()


def test_cka_against_its_formula_and_its_invariances():
    torch.manual_seed(0)
    x, y = torch.randn(20, 6, dtype=torch.float64), torch.randn(20, 4, dtype=torch.float64)
    assert cka(x, y).item() == pytest.approx(_direct_cka(x, y), rel=1e-9)
    rotation = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64)).Q
    assert cka(x, 3.0 * x @ rotation).item() == pytest.approx(1.0, rel=1e-9)
    outputs = [x, 2 * x, y]
    expected = (cka(x, 2 * x) + cka(x, y) + cka(2 * x, y)) / 3
    assert cka_diversity_loss(outputs).item() == pytest.approx(expected.item())


def test_coral_against_its_formula():  # DQRoute's OOD losses: tests/test_dqroute.py
    torch.manual_seed(0)
    a, b = torch.randn(30, 3, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64) * 2
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    assert coral_loss(a, b).item() == pytest.approx(((ca - cb) ** 2).sum() / 36, rel=1e-9)
    assert coral_loss(a, a).item() == pytest.approx(0.0, abs=1e-12)


# -------------------------------------------------------------------------------------------- moe++
def _moepp(**options):
    from gemlab.moe.routers.moepp import MoEPlusPlusRouter

    torch.manual_seed(0)
    router = MoEPlusPlusRouter(DIM, 2, k=1, zero_experts=1, copy_experts=1, constant_experts=1, **options)
    return router, MoELayer(router=router, experts=Experts(2, DIM, 8))


def _force(router, expert):
    """Make every token choose ``expert`` (index over FFN, zero, copy, constant experts)."""
    with torch.no_grad():
        router.gate.weight.zero_()
        router.gate.weight[expert] = 0.0
        router.gate.weight[expert, 0] = 50.0


def test_moepp_zero_copy_and_constant_experts_follow_their_definitions():
    router, layer = _moepp(gating_residual=False)
    tokens = torch.randn(5, DIM)
    tokens[:, 0] = 1.0
    _force(router, 2)  # the zero expert
    y, routing = layer(tokens)
    assert torch.allclose(y, torch.zeros_like(y)) and sum(routing.segment_sizes) == 0
    _force(router, 3)  # the copy expert
    y, _ = layer(tokens)
    torch.testing.assert_close(y, tokens)
    _force(router, 4)  # the constant expert: a1 x + a2 v
    with torch.no_grad():
        router.constants.fill_(0.5)
    y, _ = layer(tokens)
    mix = router.constant_mix(tokens).softmax(-1)
    torch.testing.assert_close(y, mix[:, :1] * tokens + mix[:, 1:] * 0.5)


def test_moepp_saves_ffn_rows_and_uses_the_gating_residual():
    router, layer = _moepp()
    x = torch.randn(64, DIM)
    _, routing = layer(x)
    ffn_rows = sum(routing.segment_sizes)
    assert ffn_rows < 64 and routing.logits.shape == (64, 5)  # some tokens took zero-computation experts
    with torch.no_grad():
        router.residual.weight.copy_(torch.eye(5) * 100)
    _, steered = layer(x, previous_logits=torch.eye(5)[torch.full((64,), 3)] * 1.0)
    assert steered.segment_sizes == [0, 0]  # the residual pushed every token to the copy expert


def test_subset_coral_applies_only_to_domains_sharing_an_expert():
    from gemlab.moe.subset_invariance import subset_coral_penalty

    torch.manual_seed(0)
    features = torch.randn(12, 3)
    features[4:8] *= 3  # domain 1 differs in scale from domain 0
    domains = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    apart = torch.tensor([0, 1, 2])
    assert subset_coral_penalty(features, domains, apart).item() == 0.0
    shared = torch.tensor([0, 0, 1])
    expected = coral_loss(features[:4], features[4:8])
    torch.testing.assert_close(subset_coral_penalty(features, domains, shared), expected)
