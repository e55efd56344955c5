"""The shared training machinery: optimizers, lr schedules, per-group lr, pretrained trunks, MoE++'s gating
residual through the ViT -- each against its definition, without data or Ray (runs: test_training_runs.py)."""

from __future__ import annotations

import math

import pytest
import torch

from gemlab.engine.config import ConfigError, compose_config
from gemlab.engine.optim import LRSchedule, build_optimizer, parameter_groups
from gemlab.engine.pretrained import load_trunk
from gemlab.models.common import trunk_parameters
from gemlab.models.vit import MoEViT
from gemlab.moe.layer import MoELayer
from gemlab.moe.registry import MoELayers, router_spec
from gemlab.moe.routing import RoutingContext
from gemlab.moe.spec import RunFacts

TRAINER = {"lr": 0.01, "weight_decay": 0.1, "momentum": 0.9, "backbone_lr_scale": 1.0}


def _vit(router: str = "topk", depth: int = 2, **options) -> MoEViT:
    torch.manual_seed(0)
    moe = MoELayers(router_spec(router), RunFacts(num_experts=2), options)
    return MoEViT(num_classes=3, moe=moe, image_size=8, patch_size=4, dim=8, depth=depth, heads=2, mlp_ratio=2)


# ------------------------------------------------------------------------------------------- schedules
def _factor_written_out(kind: str, warmup: int, decay: int | None, gamma: float, step: int) -> float:
    """The lr factor of 1-based ``step``: linear warm-up, then SGDR's cosine (no restart) or a step decay."""
    if step <= warmup:
        return step / warmup
    t = step - warmup - 1  # steps since the first full-lr step
    if kind == "cosine":
        return (1 + math.cos(math.pi * t / decay)) / 2 if t < decay else 0.0
    if kind == "step":
        drops = 0
        for s in range(t + 1):
            drops = s // decay
        return gamma**drops
    return 1.0


@pytest.mark.parametrize(
    ("kind", "warmup", "decay"), [("constant", 0, None), ("constant", 3, None), ("cosine", 2, 5), ("step", 0, 3)]
)
def test_schedule_factors_follow_their_definitions(kind, warmup, decay):
    schedule = LRSchedule(kind, warmup, decay, 0.5)
    for step in range(1, 15):
        assert schedule.factor(step) == pytest.approx(_factor_written_out(kind, warmup, decay, 0.5, step)), step
    if warmup:
        assert schedule.factor(warmup) == 1.0 and schedule.factor(1) == pytest.approx(1 / warmup)


def test_the_schedule_sets_every_groups_lr_from_its_base():
    model = _vit()
    optimizer = build_optimizer(model, {**TRAINER, "optimizer": "sgd", "backbone_lr_scale": 0.1})
    LRSchedule("cosine", 0, 4).apply(optimizer, 3)  # (1 + cos(π · 2/4)) / 2 = 0.5
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.0005, 0.005])


# ---------------------------------------------------------------------------- optimizers and groups
def test_the_default_optimizer_is_one_adamw_group_of_every_parameter():
    model = _vit()
    optimizer = build_optimizer(model, {**TRAINER, "optimizer": "adamw"})
    assert type(optimizer) is torch.optim.AdamW and len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert group["params"] == list(model.parameters()) and group["lr"] == 0.01 and group["weight_decay"] == 0.1


@pytest.mark.parametrize(("name", "kind"), [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_adam_and_sgd_are_built_with_their_keys(name, kind):
    optimizer = build_optimizer(_vit(), {**TRAINER, "optimizer": name})
    assert type(optimizer) is kind and optimizer.param_groups[0]["weight_decay"] == 0.1
    assert name != "sgd" or optimizer.param_groups[0]["momentum"] == 0.9


def test_the_trunk_group_is_what_the_model_declares_at_the_scaled_lr():
    model = _vit(depth=4)  # blocks 0, 2 dense, 1, 3 MoE: the stem is the patches, positions and block 0
    trunk, rest = parameter_groups(model, 0.01, 0.25)
    names = {id(p): n for n, p in model.named_parameters()}
    trunk_names = sorted(names[id(p)] for p in trunk["params"])
    assert trunk_names == sorted(n for n, _ in trunk_parameters(model))
    assert {n.split(".")[0] for n in trunk_names} == {"patches", "position", "blocks"}
    assert all(n.startswith("blocks.0.") for n in trunk_names if n.startswith("blocks"))
    assert trunk["lr"] == pytest.approx(0.0025) and rest["lr"] == 0.01
    assert len(trunk["params"]) + len(rest["params"]) == len(list(model.parameters()))


def test_a_zero_scale_freezes_the_trunk_and_trains_the_rest():
    model = _vit()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, {**TRAINER, "optimizer": "adamw", "backbone_lr_scale": 0.0})
    out = model(torch.randn(4, 3, 8, 8))
    (out.logits.square().mean() + out.aux_loss).backward()
    optimizer.step()
    trunk = {n for n, _ in trunk_parameters(model)}
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (name in trunk or p.grad is None), name


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.optimizer=rmsprop", "trainer.optimizer"),
        ("trainer.schedule=cosine", "trainer.decay_steps"),  # cosine needs its length
        ("trainer.schedule=linear", "trainer.schedule"),
        ("trainer.warmup_steps=-1", "trainer.warmup_steps"),
        ("trainer.momentum=1.0", "trainer.momentum"),
        ("trainer.decay_factor=0", "trainer.decay_factor"),
        ("trainer.backbone_lr_scale=-0.5", "trainer.backbone_lr_scale"),
    ],
)
def test_bad_optimisation_keys_are_refused_naming_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        compose_config([override])


# ------------------------------------------------------------------------------------ pretrained trunk
def test_the_trunk_loads_strictly_and_only_the_trunk(tmp_path):
    source, target = _vit(), _vit()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    file = tmp_path / "shared.pt"
    torch.save({"model": source.state_dict(), "optimizer": {}}, file)  # the layout of a run's shared.pt
    untouched = {k: v.clone() for k, v in target.state_dict().items()}
    load_trunk(target, str(file), "trainer.init_from")
    trunk = {n for n, _ in trunk_parameters(target)}
    for key, value in target.state_dict().items():
        expected = source.state_dict()[key] if key in trunk else untouched[key]
        assert torch.equal(value, expected), key


def test_a_trunk_file_that_does_not_fit_names_the_file_and_the_keys(tmp_path):
    model = _vit()
    state = {k: v for k, v in model.state_dict().items() if k != "patches.bias"}
    state["blocks.0.extra"] = torch.zeros(2)
    file = tmp_path / "partial.pt"
    torch.save(state, file)
    with pytest.raises(ConfigError, match=r"trainer\.init_from=.*partial\.pt.*missing \['patches\.bias'\].*extra"):
        load_trunk(model, str(file), "trainer.init_from")
    torch.save({"head.weight": torch.zeros(3, 8)}, file)
    with pytest.raises(ConfigError, match="holds no weights of the trunk"):
        load_trunk(model, str(file), "trainer.init_from")
    wrong = dict(model.state_dict(), **{"patches.bias": torch.zeros(5)})
    torch.save(wrong, file)
    with pytest.raises(ConfigError, match=r"does not fit this model.s trunk.*patches\.bias"):
        load_trunk(model, str(file), "trainer.init_from")


# ------------------------------------------------------------------------------- MoE++ gating residual
def _second_layer_inputs(model: MoEViT) -> tuple[MoELayer, dict]:
    """The ViT's second MoE layer, and what it receives on a forward (its tokens, its ``previous_logits``)."""
    layers = [m for m in model.modules() if isinstance(m, MoELayer)]
    seen: dict = {}

    def record(_module, args, kwargs):
        seen.update(tokens=args[0].reshape(-1, args[0].shape[-1]), previous=kwargs["previous_logits"])

    layers[1].register_forward_pre_hook(record, with_kwargs=True)
    return layers[1], seen


@pytest.mark.parametrize("residual", [True, False])
def test_the_vit_passes_moepp_logits_to_the_next_moe_layer(residual):
    """MoE++ §3: G_j(x) = W_j x_j + W_r,j G_{j-1}(x); off, the second layer routes on W_j x_j alone."""
    model = _vit("moepp", depth=4, k=1, gating_residual=residual).train()
    layer, seen = _second_layer_inputs(model)
    out = model(torch.randn(3, 3, 8, 8))
    first, second = out.routings
    assert seen["previous"] is first.logits  # the first MoE layer's (N, E_total) logits, handed on
    router = layer.router
    alone = router(seen["tokens"], RoutingContext((3, 4))).logits  # the same tokens, no previous layer
    with torch.no_grad():
        written = [  # W_j x + W_r G_{j-1}, one token and one expert at a time
            [
                sum(float(router.gate.weight[e, d]) * float(seen["tokens"][t, d]) for d in range(8))
                + (
                    sum(float(router.residual.weight[e, f]) * float(first.logits[t, f]) for f in range(6))
                    if residual
                    else 0.0
                )
                for e in range(6)
            ]
            for t in range(seen["tokens"].shape[0])
        ]
    torch.testing.assert_close(second.logits, torch.tensor(written), rtol=1e-4, atol=1e-5)
    assert torch.equal(second.logits, alone) != residual
    assert torch.equal(second.logits.argmax(-1), alone.argmax(-1)) != residual  # on: some tokens choose otherwise
