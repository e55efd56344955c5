"""STAR (seed 003) as an objective: its losses against loop transcriptions, the heads' routing, CCA, the views,
the linear probe, config errors, and a short run through the worker (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gemlab.data.views import PARAMETERS, ViewAugment
from gemlab.engine.checkpoint import read_checkpoint, write_checkpoint
from gemlab.engine.config import ConfigError, as_plain, compose_config
from gemlab.engine.prepare import Prepared, prepare
from gemlab.engine.resume import verified_step
from gemlab.engine.tasks.probe import LinearProbe, probe_objective
from gemlab.engine.worker import Worker
from gemlab.moe.star import STARHeads, canonical_correlation, nt_xent, transformation_regression
from gemlab.storage import Location
from helpers import tiny_config

SMALL = ["model.width=8", "model.head_hidden=16", "model.out_dim=8", "trainer.batch_size=16", "data.image_size=16"]


def star(digits_dir, storage, *overrides: str) -> Prepared:
    """experiment=star_digits, small, on two of the test session's digit domains (the digits_dir fixture), prepared;
    raises ConfigError."""
    base = [
        "experiment=star_digits",
        f"data.path={digits_dir}",
        f"storage_path={storage}",
        "data.domains=[rot0,colour]",
    ]
    small = (
        [o for o in SMALL if not o.startswith("model.")] if any(o.startswith("model=") for o in overrides) else SMALL
    )
    return prepare(compose_config([*base, *small, *overrides]))


def nt_xent_written_out(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """SimCLR Eq. 1, one anchor at a time: -log exp(s_ij) / sum_{k != i} exp(s_ik), averaged over the 2N anchors."""
    u = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in (z1.tolist() + z2.tolist())]
    n, total = len(z1), 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n
        sim = [sum(a * b for a, b in zip(u[i], u[k], strict=True)) / tau for k in range(2 * n)]
        total += -math.log(math.exp(sim[j]) / sum(math.exp(sim[k]) for k in range(2 * n) if k != i))
    return total / (2 * n)


def test_nt_xent_is_simclr_eq1():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for tau in (0.1, 0.5, 2.0):
        assert nt_xent(z1, z2, tau).item() == pytest.approx(nt_xent_written_out(z1, z2, tau), rel=1e-10)
    assert nt_xent(z1, z1 * 3, 0.05).item() < nt_xent(z1, z2, 0.05).item()  # agreeing views: lower loss


def test_transformation_regression_is_augself_squared_error():
    predicted = torch.tensor([[0.5, -1.0, 0.0], [2.0, 0.0, 1.0]])
    omega1, omega2 = (
        torch.tensor([[0.1, 0.2, 0.3], [-1.0, 0.5, 0.0]]),
        torch.tensor([[0.4, -0.2, 0.3], [1.0, 1.0, 1.0]]),
    )
    expected = 0.0
    for n in range(2):
        expected += sum((predicted[n, p] - (omega2[n, p] - omega1[n, p])) ** 2 for p in range(3)).item()
    assert transformation_regression(predicted, omega2 - omega1).item() == pytest.approx(expected / 2)


def test_soft_routing_mixes_every_head_with_each_objectives_own_gate():
    torch.manual_seed(0)
    heads = STARHeads(6, 4, num_heads=3, hidden=8)
    x = torch.randn(5, 6)
    out = heads(x)
    outputs = [heads.heads.expert(i)(x) for i in range(3)]
    for t, task in enumerate(("invariant", "equivariant")):
        gate = heads.gates[t]
        for b in range(5):  # MMoE: g_t(x) = softmax(W_t x + b_t), z_t = sum_i g_t(x)_i h_i(x)
            scores = [
                sum(gate.weight[i, k].item() * x[b, k].item() for k in range(6)) + gate.bias[i].item() for i in range(3)
            ]
            weights = [math.exp(s) / sum(math.exp(r) for r in scores) for s in scores]
            torch.testing.assert_close(out[task].weights[b], torch.tensor(weights))
            mixed = sum(weights[i] * outputs[i][b] for i in range(3))
            torch.testing.assert_close(out[task].embedding[b], mixed)
    assert not torch.allclose(out["invariant"].weights, out["equivariant"].weights)


def test_separate_heads_are_hard_assigned_one_per_objective():
    heads = STARHeads(6, 4, num_heads=2, hidden=8, routing="separate")
    x = torch.randn(3, 6)
    out = heads(x)
    torch.testing.assert_close(out["invariant"].embedding, heads.heads.expert(0)(x))
    torch.testing.assert_close(out["equivariant"].embedding, heads.heads.expert(1)(x))
    assert out["equivariant"].weights.tolist() == [[0.0, 1.0]] * 3 and heads.gates is None
    with pytest.raises(ValueError, match="need 2 heads, got 3"):
        STARHeads(6, 4, num_heads=3, routing="separate")
    with pytest.raises(ValueError, match="routing 'hard'"):
        STARHeads(6, 4, routing="hard")


def cca_written_out(x: np.ndarray, y: np.ndarray) -> float:
    """Hotelling's canonical correlations: singular values of S_xx^-1/2 S_xy S_yy^-1/2 (no ridge), their mean."""

    def inverse_root(s: np.ndarray) -> np.ndarray:
        values, vectors = np.linalg.eigh(s)
        return vectors @ np.diag(values**-0.5) @ vectors.T

    x, y = x - x.mean(0), y - y.mean(0)
    n = len(x)
    sxx, syy, sxy = x.T @ x / (n - 1), y.T @ y / (n - 1), x.T @ y / (n - 1)
    return float(np.linalg.svd(inverse_root(sxx) @ sxy @ inverse_root(syy), compute_uv=False).mean())


def test_canonical_correlation_against_hotelling_and_known_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = np.c_[x[:, 0] + 0.5 * rng.normal(size=500), rng.normal(size=(500, 2))]  # one shared direction
    value = canonical_correlation(torch.tensor(x), torch.tensor(y), ridge=0.0).item()
    assert value == pytest.approx(cca_written_out(x, y), rel=1e-9)
    assert canonical_correlation(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(value, abs=1e-3)
    z = torch.randn(2000, 4, dtype=torch.float64)
    mixing = torch.tensor([[2.0, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0.5]], dtype=torch.float64)
    assert canonical_correlation(z, z @ mixing).item() == pytest.approx(1.0, abs=1e-3)  # invertible map: 1
    assert canonical_correlation(z, torch.randn(2000, 4, dtype=torch.float64)).item() < 0.05  # independent: ~0
    scaled = canonical_correlation(z * 1e-3, (z @ mixing)[:, :2] * 1e3).item()  # scale-free (the ridge is relative)
    assert scaled == pytest.approx(1.0, abs=1e-3)


def test_views_are_seeded_and_their_parameters_say_how_they_were_made():
    images = torch.rand(6, 3, 16, 16) - 0.5
    augment = ViewAugment(crop_scale_min=0.5, max_rotation=30.0, jitter=0.4)
    first, omega = augment(images, torch.Generator().manual_seed(3))
    again, omega_again = augment(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and torch.equal(omega, omega_again)
    assert first.shape == images.shape and omega.shape == (6, len(PARAMETERS)) and omega.abs().max() <= 1
    assert first.min() >= -0.5 and first.max() <= 0.5
    u = torch.rand(6, len(PARAMETERS), generator=torch.Generator().manual_seed(3)) * 2 - 1  # the draws behind ω
    sides = math.sqrt(0.5) + (1 - math.sqrt(0.5)) * (u[:, 0] + 1) / 2
    torch.testing.assert_close(omega[:, [0, 3, 4, 5]], u[:, [0, 3, 4, 5]])  # crop side, rotation, jitters: as drawn
    torch.testing.assert_close(omega[:, 1], u[:, 1] * (1 - sides) / (1 - math.sqrt(0.5)))  # a whole image: centre 0
    plain = ViewAugment(0.999999, 1e-6, 1e-6)(images, torch.Generator().manual_seed(0))[0]  # ~the identity
    torch.testing.assert_close(plain, images, atol=1e-3, rtol=0)
    for key, value in (("crop_scale_min", 1.0), ("max_rotation", 0.0), ("jitter", 1.5)):
        arguments = {"crop_scale_min": 0.5, "max_rotation": 20.0, "jitter": 0.4, key: value}
        with pytest.raises(ValueError, match=f"objective.{key}"):
            ViewAugment.checked(**arguments, where="objective")


def test_linear_probe_is_the_regularised_optimum_and_separates_separable_classes():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    labels = torch.arange(3).repeat_interleave(40)
    features = centres[labels] + 0.5 * torch.randn(120, 2, generator=generator)  # separable clusters
    probe = LinearProbe.fit(features, labels, 3, weight_decay=1e-2)
    assert probe.accuracy(features, labels) == 1.0
    x = ((features.double() - probe.mean) / probe.scale).requires_grad_(False)
    weight, bias = probe.weight.clone().requires_grad_(True), probe.bias.clone().requires_grad_(True)
    probe_objective(x, labels, weight, bias, 1e-2).backward()  # at the optimum the gradient vanishes
    assert weight.grad.abs().max() < 1e-6 and bias.grad.abs().max() < 1e-6
    again = LinearProbe.fit(features, labels, 3, weight_decay=1e-2)
    assert torch.equal(again.weight, probe.weight)  # nothing random in the fit
    assert math.isnan(probe.accuracy(features[:0], labels[:0]))


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model=vit"], "model=vit is a classification model, but objective=star"),
        (["objective=supervised"], "or set objective=star"),
        (["objective.temperature=0"], "objective.temperature"),
        (["objective.jitter=lots"], "objective.jitter='lots': expected a number"),
        (["objective.invariant_weight=-1"], "objective.invariant_weight"),
        (["objective.invariant_weight=0", "objective.equivariant_weight=0"], "both 0"),
        (["objective.crop_scale_min=1.5"], "objective.crop_scale_min"),
        (
            ["model.routing=separate"],
            r"model.routing=separate is one head per objective: set moe.num_experts=2 \(got 4\)",
        ),
        (["model.routing=hard"], "routing 'hard'"),
    ],
)
def test_wrong_combinations_are_config_errors_naming_the_keys(digits_dir, tmp_path, overrides, named):
    with pytest.raises(ConfigError, match=named):
        star(digits_dir, tmp_path, *overrides)


def test_the_objective_group_refuses_another_objectives_keys(digits_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"objective\.temperature"):
        tiny_config(digits_dir, tmp_path, "objective.temperature=0.5")  # supervised has no temperature


@pytest.mark.slow
def test_star_trains_through_the_worker_and_reports_probe_accuracy_and_cca(digits_dir, tmp_path):
    run = star(digits_dir, tmp_path)
    worker = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    assert worker.task.metric == "probe_accuracy" and run.plan is None and run.table is None
    before = {k: v.clone() for k, v in worker.model.state_dict().items()}
    stats = [worker.step(step) for step in (1, 2, 3)]
    assert {"loss", "invariant", "equivariant", "gate/invariant/0", "gate/equivariant/3"} <= set(stats[0])
    assert stats[0]["loss"] == pytest.approx(stats[0]["invariant"] + stats[0]["equivariant"])
    assert any(not torch.equal(before[k], v) for k, v in worker.model.state_dict().items())
    results = worker.evaluate()
    assert set(results) == {0, 1}
    for result in results.values():
        assert 0.1 <= result["probe_accuracy"] <= 1.0 and 0.0 <= result["cca"] <= 1.0
        assert len(result["expert_load"]) == 4 and sum(result["expert_load"]) == pytest.approx(1.0)
    again = Worker(as_plain(run.cfg), run.plan, run.table, 0, 1)
    assert [again.step(step) for step in (1, 2, 3)] == stats  # seeded views: the same steps again
    folder = tmp_path / "checkpoint"  # each head is an expert shard: the checkpoint verifies, and restores
    folder.mkdir()
    meta = {"plan_fingerprint": "p", "num_experts": run.cfg.moe.num_experts, "identity_digest": "i", "step": 3}
    write_checkpoint(folder, worker.model, worker.optimizer, worker.role, meta, [{"step": 3}])
    assert verified_step(Location.parse(str(folder))) == 3
    read_checkpoint(folder, again.model, again.optimizer, meta)
    for key, value in worker.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key
