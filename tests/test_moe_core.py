"""The MoE layer, its experts, and the gem / topk / soft / sinkhorn routers against their definitions."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gemlab.moe.experts import Experts
from gemlab.moe.layer import MoELayer
from gemlab.moe.losses import balance_loss, z_loss
from gemlab.moe.registry import build_router
from gemlab.moe.routers.gem import GEMRouter
from gemlab.moe.routers.sinkhorn import sinkhorn
from gemlab.moe.routers.topk import TopKRouter, drop_over_capacity
from gemlab.moe.routing import RoutingContext
from gemlab.moe.spec import RunFacts
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem

DIM, HIDDEN, E = 16, 32, 4


def _layer(name, **options):
    torch.manual_seed(0)
    router = build_router(name, DIM, RunFacts(num_experts=E), **options)
    return MoELayer(router=router, experts=Experts(E, DIM, HIDDEN))


def _ffn(experts, e, x):
    ffn = experts.expert(e)
    return F.linear(F.gelu(F.linear(x, ffn.w1.t(), ffn.b1)), ffn.w2.t(), ffn.b2)


# ---------------------------------------------------------------------------------------------- gem
def test_gem_one_domain_batch_runs_exactly_one_expert_with_no_gather():
    layer = MoELayer(router=GEMRouter([2, 0], E), experts=Experts(E, DIM, HIDDEN))
    x = torch.randn(3, 5, DIM)
    y, routing = layer(x, domain=torch.tensor([0, 0, 0]))
    assert routing.segment_sizes == [0, 0, 15, 0] and routing.token_index is None
    torch.testing.assert_close(y, _ffn(layer.experts, 2, x))
    assert routing.aux_losses == {} and not list(layer.router.parameters())


def test_gem_mixed_batch_groups_samples_and_leaves_other_experts_without_gradient():
    layer = MoELayer(router=GEMRouter([1, 3, 1], E), experts=Experts(E, DIM, HIDDEN))
    x = torch.randn(4, 6, DIM, requires_grad=True)
    domain = torch.tensor([1, 0, 2, 1])
    y, routing = layer(x, domain=domain)
    assert routing.segment_sizes == [0, 12, 0, 12]
    # rows of expert 1 are samples 1 and 2, each whole and in order: grouped by sample, not by token
    assert routing.token_index[:12].tolist() == list(range(6, 18))
    for i, d in enumerate(domain.tolist()):
        torch.testing.assert_close(y[i], _ffn(layer.experts, [1, 3, 1][d], x[i]))
    y.pow(2).sum().backward()
    grads = [layer.experts.expert(e).w1.grad for e in range(E)]
    assert grads[0] is None and grads[2] is None
    assert torch.count_nonzero(grads[1]) > 0 and torch.count_nonzero(grads[3]) > 0


def test_gem_router_from_a_plan_and_its_errors():
    plan = make_plan(AssignmentProblem.count(np.eye(3, 4) + 0.1, 1), "gem")
    router = build_router("gem", DIM, RunFacts(num_experts=4, plan=plan))
    assert router.table.tolist() == plan.assignment.tolist()
    with pytest.raises(ValueError, match="the plan has 4 experts, the layer 8"):
        build_router("gem", DIM, RunFacts(num_experts=8, plan=plan))
    with pytest.raises(ValueError, match="needs `domain` ids"):
        MoELayer(router=router, experts=Experts(4, DIM, HIDDEN))(torch.randn(2, DIM))
    with pytest.raises(ValueError, match=r"domain ids must be in 0..2"):
        MoELayer(router=router, experts=Experts(4, DIM, HIDDEN))(torch.randn(2, DIM), domain=torch.tensor([0, 5]))


def test_gem_forced_to_one_expert_restores_its_table_even_when_the_block_raises():
    router = GEMRouter([2, 0, 1], E)
    with router.forced(3):
        assert router.table.tolist() == [3, 3, 3]
    assert router.table.tolist() == [2, 0, 1]
    with pytest.raises(KeyError), router.forced(1):
        routing = router(torch.randn(2, DIM), RoutingContext((2, 1), domain=torch.tensor([0, 2])))
        assert routing.counts.tolist() == [0, 2, 0, 0]
        raise KeyError("evaluation failed")
    assert router.table.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="cannot force expert 4"), router.forced(4):
        pass


# --------------------------------------------------------------------------------------------- topk
def test_topk_matches_a_direct_per_token_computation_without_drops():
    layer = _layer("topk", k=2, capacity_factor=10.0)
    x = torch.randn(2, 7, DIM)
    y, _ = layer(x)
    tokens = x.reshape(-1, DIM)
    probs = layer.router.gate(tokens).softmax(-1)
    expected = []
    for i, token in enumerate(tokens):
        gate, chosen = probs[i].topk(2)
        gate = gate / gate.sum()
        expected.append(sum(g * _ffn(layer.experts, e, token) for g, e in zip(gate, chosen.tolist(), strict=True)))
    torch.testing.assert_close(y.reshape(-1, DIM), torch.stack(expected))


def test_capacity_drops_late_tokens_and_second_choices_first():
    expert = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 0]])
    kept = drop_over_capacity(expert, num_experts=3, capacity=2)
    # slot 0 first: expert 0 takes tokens 0 and 1 (token 2 dropped), expert 1 token 3.
    # slot 1: expert 1 takes token 0 and is full (token 2 dropped), expert 2 token 1; expert 0 is full (token 3).
    assert kept.tolist() == [[0, 1], [0, 2], [-1, -1], [1, -1]]


def test_unrouted_choices_take_no_capacity():
    # MoE++ marks zero/copy/constant choices -1: they must not fill expert 0
    expert = torch.tensor([[-1], [-1], [0], [0]])
    assert drop_over_capacity(expert, num_experts=2, capacity=2).tolist() == [[-1], [-1], [0], [0]]


def test_topk_auxiliary_losses_are_weighted_and_match_their_formulas():
    layer = _layer("topk", k=1, balance_weight=0.5, z_weight=0.25)
    x = torch.randn(32, DIM)
    _, routing = layer(x)
    logits = layer.router.gate(x)
    chosen = logits.argmax(-1, keepdim=True)
    torch.testing.assert_close(routing.aux_losses["balance"], 0.5 * balance_loss(logits.softmax(-1), chosen))
    torch.testing.assert_close(routing.aux_losses["z"], 0.25 * z_loss(logits))


def test_balance_and_z_loss_against_direct_transcriptions():
    torch.manual_seed(1)
    logits = torch.randn(10, 5)
    probs = logits.softmax(-1)
    chosen = probs.topk(2, dim=-1).indices
    n, e, k = 10, 5, 2
    direct = 0.0
    for expert in range(e):
        f = sum(1 for i in range(n) for s in range(k) if chosen[i, s] == expert) / (n * k)
        p = sum(probs[i, expert].item() for i in range(n)) / n
        direct += f * p
    assert balance_loss(probs, chosen).item() == pytest.approx(e * direct, rel=1e-6)
    uniform = torch.full((8, 4), 0.25)
    assert balance_loss(uniform, torch.arange(8).remainder(4).unsqueeze(1)).item() == pytest.approx(1.0)
    direct_z = sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits.tolist()) / n
    assert z_loss(logits).item() == pytest.approx(direct_z, rel=1e-6)


# --------------------------------------------------------------------------------------------- soft
def test_soft_moe_dispatch_and_combine_are_softmaxes_per_sequence():
    layer = _layer("soft", slots_per_expert=2)
    x = torch.randn(3, 5, DIM)
    y, routing = layer(x)
    torch.testing.assert_close(routing.dispatch_weights.sum(dim=1), torch.ones(3, E * 2))
    torch.testing.assert_close(routing.combine_weights.sum(dim=2), torch.ones(3, 5))
    # direct transcription for sequence 0
    d, c = routing.dispatch_weights[0], routing.combine_weights[0]
    slots = d.t() @ x[0]  # (E*S, D)
    outputs = torch.stack([_ffn(layer.experts, s // 2, slots[s]) for s in range(E * 2)])
    torch.testing.assert_close(y[0], c @ outputs)


def test_soft_moe_sequences_do_not_mix():
    layer = _layer("soft")
    x = torch.randn(2, 4, DIM)
    y, _ = layer(x)
    x2 = x.clone()
    x2[1] = torch.randn(4, DIM)
    y2, _ = layer(x2)
    torch.testing.assert_close(y[0], y2[0])


# ----------------------------------------------------------------------------------------- sinkhorn
def test_sinkhorn_plan_is_balanced_within_tolerance():
    torch.manual_seed(2)
    logits = torch.randn(512, 8) * 3 + torch.tensor([4.0, 0, 0, 0, 0, 0, 0, -4])  # a very skewed router
    plan = sinkhorn(logits, iterations=10)
    torch.testing.assert_close(plan.sum(dim=1), torch.ones(512))
    loads = plan.sum(dim=0)
    assert torch.all((loads - 64).abs() / 64 < 0.01)  # soft loads within 1% of uniform
    hard = torch.bincount(plan.argmax(1), minlength=8)
    assert hard.min() >= 64 * 0.75 and hard.max() <= 64 * 1.25  # hard assignment within 25%
    greedy = torch.bincount(logits.argmax(1), minlength=8)
    assert greedy.max() > 2 * hard.max()  # whereas plain argmax piles up on one expert


def test_sinkhorn_router_gradients_reach_the_gate():
    layer = _layer("sinkhorn")
    x = torch.randn(4, 8, DIM)
    y, routing = layer(x)
    y.sum().backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0 and sum(routing.segment_sizes) == 32


# ----------------------------------------------------------------------------------- every router
@pytest.mark.parametrize("name", ["topk", "soft", "sinkhorn"])
@pytest.mark.parametrize("shape", [(3, 6, DIM), (5, DIM)])
def test_shapes_gradients_and_determinism(name, shape):
    torch.manual_seed(3)
    x = torch.randn(*shape, requires_grad=True)
    y, routing = _layer(name)(x)
    assert y.shape == x.shape
    (y.sum() + sum(routing.aux_losses.values(), torch.zeros(()))).backward()
    assert x.grad.abs().sum() > 0
    y_again, _ = _layer(name)(x)
    torch.testing.assert_close(y, y_again)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("bogus", {}, "unknown router 'bogus'"),
        ("topk", {"k": 5}, "k must be in 1..4"),
        ("topk", {"balance_weight": -0.1}, "balance_weight must be a finite number >= 0, got -0.1"),
        ("topk", {"capacity_factor": 0}, "capacity_factor must be > 0"),
        ("soft", {"slots_per_expert": 0}, "slots_per_expert must be >= 1"),
        ("gem", {}, "needs a plan"),
    ],
)
def test_bad_router_configs(name, options, message):
    with pytest.raises(ValueError) as error:
        build_router(name, DIM, RunFacts(num_experts=E), **options)
    assert message in str(error.value)


def test_layer_rejects_mismatched_experts_and_bad_shapes():
    with pytest.raises(ValueError, match="routes to 4 experts, but the layer holds 3"):
        MoELayer(router=TopKRouter(DIM, 4), experts=Experts(3, DIM, HIDDEN))
    with pytest.raises(ValueError, match="expected"):
        _layer("topk")(torch.randn(2, 3, 4, DIM))
