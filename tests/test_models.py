"""The classifiers: one router config swaps the routing and nothing else; the model registry's checks."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gemlab.engine.config import DEFAULT_CONFIG_DIR, ConfigError, compose_config
from gemlab.engine.model import configured_model
from gemlab.models.registry import MODELS
from gemlab.models.resnet import MoEResNet
from gemlab.models.vit import MoEViT
from gemlab.moe.registry import MoELayers, router_spec
from gemlab.moe.routers.class_gem import ClassGEMRouter
from gemlab.moe.spec import RunFacts
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem

ROUTERS = [{"name": "topk", "k": 2}, {"name": "soft"}, {"name": "sinkhorn"}, {"name": "gem"}]


def _plan(tasks, experts):
    return make_plan(AssignmentProblem.count(np.random.default_rng(0).random((tasks, experts)), 2), "gem")


def _layers(router, num_experts, plan=None):
    options = {k: v for k, v in router.items() if k != "name"}
    return MoELayers(router_spec(router["name"]), RunFacts(num_experts=num_experts, plan=plan), options)


@pytest.mark.parametrize("router", ROUTERS, ids=lambda r: r["name"])
def test_vit_trains_a_step_with_every_kind_of_routing(router):
    torch.manual_seed(0)
    moe = _layers(router, 4, _plan(3, 4))
    model = MoEViT(num_classes=5, moe=moe, image_size=16, dim=32, depth=4, heads=2)
    images, labels, domain = torch.randn(6, 3, 16, 16), torch.randint(0, 5, (6,)), torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(images, domain=domain, labels=labels)
    assert out.logits.shape == (6, 5) and len(out.routings) == 2  # blocks 1 and 3 are MoE
    loss = torch.nn.functional.cross_entropy(out.logits, labels) + out.aux_loss
    loss.backward()
    assert model.patches.weight.grad.abs().sum() > 0
    if router["name"] == "topk":
        assert set(out.aux_losses) == {"balance", "z"}
        per_layer = sum(r.aux_losses["balance"].item() for r in out.routings)
        assert out.aux_losses["balance"].item() == pytest.approx(per_layer)


def test_resnet_with_gem_expert_heads_routes_each_domain_to_its_expert():
    torch.manual_seed(0)
    plan = _plan(3, 4)
    model = MoEResNet(num_classes=4, moe=_layers({"name": "gem"}, 4, plan), hidden=64)
    out = model(torch.randn(3, 3, 32, 32), domain=torch.tensor([0, 1, 2]))
    assert out.logits.shape == (3, 4)
    counts = out.routings[0].counts.tolist()
    assert counts == np.bincount(plan.assignment, minlength=4).tolist()


def test_resnet_loads_a_local_checkpoint_only(tmp_path):
    from torchvision.models import resnet18

    weights = resnet18(weights=None).state_dict()
    weights["conv1.weight"] = torch.full_like(weights["conv1.weight"], 0.5)
    path = tmp_path / "trunk.pt"
    torch.save(weights, path)
    model = MoEResNet(num_classes=2, moe=_layers({"name": "topk"}, 2), hidden=16, checkpoint=path)
    assert torch.all(model.trunk.conv1.weight == 0.5)
    with pytest.raises(FileNotFoundError):
        MoEResNet(num_classes=2, moe=_layers({"name": "topk"}, 2), checkpoint=tmp_path / "missing.pt")


def test_class_level_gem_predictor_learns_the_plans_class_to_expert_map():
    torch.manual_seed(0)
    classes, experts, dim = 12, 3, 8
    table = [c % experts for c in range(classes)]
    centres = torch.randn(classes, dim) * 3
    router = ClassGEMRouter(dim, experts, table)
    optimiser = torch.optim.SGD(router.parameters(), lr=0.5)
    from gemlab.moe.routing import RoutingContext

    for _ in range(150):
        labels = torch.randint(0, classes, (128,))
        tokens = centres[labels] + torch.randn(128, dim) * 0.3
        routing = router(tokens, RoutingContext((128, 1), labels=labels))
        assert routing.counts.tolist() == torch.bincount(torch.tensor(table)[labels], minlength=experts).tolist()
        optimiser.zero_grad()
        routing.aux_losses["assignment"].backward()
        optimiser.step()
    router.eval()
    labels = torch.randint(0, classes, (512,))
    routing = router(centres[labels] + torch.randn(512, dim) * 0.3, RoutingContext((512, 1)))
    predicted = torch.zeros(512, dtype=torch.long)
    predicted[routing.token_index if routing.token_index is not None else torch.arange(512)] = torch.repeat_interleave(
        torch.arange(experts), torch.tensor(routing.segment_sizes)
    )
    accuracy = (predicted == torch.tensor(table)[labels]).float().mean().item()
    assert accuracy > 0.95
    with pytest.raises(ValueError, match="needs the class labels"):
        router.train()(torch.randn(4, dim), RoutingContext((4, 1)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_file_sets_exactly_the_keys_its_model_reads(name):
    path: Path = DEFAULT_CONFIG_DIR / "model" / f"{name}.yaml"
    keys = yaml.safe_load(path.read_text())
    assert keys.pop("name") == name and sorted(keys) == sorted(MODELS[name].options)
    spec, options = configured_model(compose_config([f"model={name}"]))
    assert spec is MODELS[name] and options == keys


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model=resnet", "+model.depth=4"], "model.depth"),
        (["model.name=resnet"], "model.dim"),  # the ViT's keys, under another model's name
        (["experiment=tiny", "model=resnet"], "model.dim"),  # a preset that sizes a ViT
        (["model.name=convnext"], "unknown model 'convnext'"),
    ],
)
def test_a_key_the_model_does_not_use_is_refused_by_name(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        configured_model(compose_config(overrides))


def test_the_criterion_is_cross_entropy_unless_the_router_brings_its_own():
    model = MoEViT(num_classes=3, moe=_layers({"name": "topk"}, 2), image_size=8, dim=16, depth=2)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(model.criterion(logits, labels), torch.nn.functional.cross_entropy(logits, labels))
    assert not any(k.startswith("criterion.") for k in model.state_dict())  # nothing new in its checkpoints
