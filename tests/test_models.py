"""The classifiers: one router config swaps the routing and nothing else."""

import numpy as np
import pytest
import torch

from gemlab.models.resnet import MoEResNet
from gemlab.models.vit import MoEViT
from gemlab.moe.routers.class_gem import ClassGEMRouter
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem

ROUTERS = [{"name": "topk", "k": 2}, {"name": "soft"}, {"name": "sinkhorn"}, {"name": "gem"}]


def _plan(tasks, experts):
    return make_plan(AssignmentProblem.count(np.random.default_rng(0).random((tasks, experts)), 2), "gem")


@pytest.mark.parametrize("router", ROUTERS, ids=lambda r: r["name"])
def test_vit_trains_a_step_with_every_router(router):
    torch.manual_seed(0)
    model = MoEViT(
        num_classes=5, router=router, num_experts=4, image_size=16, dim=32, depth=4, heads=2, plan=_plan(3, 4)
    )
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
    model = MoEResNet(num_classes=4, router={"name": "gem"}, num_experts=4, hidden=64, plan=plan)
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
    model = MoEResNet(num_classes=2, router={"name": "topk"}, num_experts=2, hidden=16, checkpoint=path)
    assert torch.all(model.trunk.conv1.weight == 0.5)
    with pytest.raises(FileNotFoundError):
        MoEResNet(num_classes=2, router={"name": "topk"}, num_experts=2, checkpoint=tmp_path / "missing.pt")


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
