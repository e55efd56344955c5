"""The DINO detector: denoising queries and mask, look-forward-twice, the three expert placements, backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_convert

from gemlab.models.common import ModelParts
from gemlab.models.detection.backbone import build_backbone
from gemlab.models.detection.decoder import DinoDecoder
from gemlab.models.detection.denoising import ContrastiveDenoising
from gemlab.models.detection.dino import build_dino
from gemlab.models.detection.encoder import DenseFFN
from gemlab.models.detection.heads import PredictionHeads, inverse_sigmoid
from gemlab.models.detection.params import parameter_counts
from gemlab.models.detection.structures import DetectionTargets
from gemlab.moe.layer import MoELayer
from gemlab.moe.registry import MoELayers, router_spec, stem_only_layers
from gemlab.moe.spec import RunFacts

CLASSES, SIZE = 5, 64
SMALL = {
    "backbone": "conv",
    "dim": 16,
    "hidden": 32,
    "heads": 2,
    "points": 2,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "num_queries": 6,
    "dn_groups": 2,
}


class _Plan:
    """The two fields a router reads from a plan: domain d goes to expert ``assignment[d]``."""

    def __init__(self, assignment: list[int], num_experts: int = 2) -> None:
        self.num_experts, self.assignment = num_experts, np.array(assignment)


def _layers(router: str = "gem", assignment=(0, 1), local_experts=None) -> MoELayers:
    facts = RunFacts(num_experts=2, num_domains=2, plan=_Plan(list(assignment)))
    return MoELayers(router_spec(router), facts, {}, local_experts)


def _model(experts_in: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    moe = kwargs.pop("moe", None) or _layers()
    return build_dino(ModelParts(CLASSES, SIZE, moe), **{**SMALL, "experts_in": experts_in, **kwargs})


def _targets(counts=(2, 1)) -> DetectionTargets:
    boxes = [torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2]])[:n] for n in counts]
    labels = [torch.tensor([1, 3])[:n] for n in counts]
    return DetectionTargets(boxes, labels, torch.ones(len(counts), CLASSES, dtype=torch.bool))


def _batch(batch: int = 2):
    images = torch.randn(batch, 3, SIZE, SIZE)
    mask = torch.zeros(batch, SIZE, SIZE, dtype=torch.bool)
    mask[-1, :, 48:] = True  # the last image is letterboxed
    return images, mask


# ---- contrastive denoising


def test_denoising_mask_isolates_groups_and_hides_them_from_matching_queries():
    torch.manual_seed(0)
    queries = ContrastiveDenoising(CLASSES, 8, groups=3, label_noise=0.5, box_noise=0.4)(_targets(), num_queries=4)
    layout, mask = queries.layout, queries.attention_mask
    size, block = layout.size, 2 * layout.max_objects
    assert (layout.groups, layout.max_objects) == (3, 2)
    assert mask.shape == (size + 4, size + 4) and queries.content.shape == (2, size, 8)
    assert mask[size:, :size].all()  # no matching query sees a denoising query
    assert not mask[size:, size:].any()  # matching queries see each other
    assert not mask[:size, size:].any()  # denoising queries see the matching ones
    assert not mask.diagonal().any()  # everyone sees itself
    group = torch.arange(size) // block
    same_group = group[:, None] == group[None, :]
    assert torch.equal(mask[:size, :size], ~same_group)


def test_denoising_copies_sit_where_the_layout_says_and_negatives_move_further():
    torch.manual_seed(0)
    targets, lam = _targets((2, 1)), 0.4
    denoising = ContrastiveDenoising(CLASSES, 8, groups=50, label_noise=0.0, box_noise=lam)
    queries = denoising(targets, num_queries=3)
    layout = queries.layout
    boxes = queries.anchors.sigmoid()  # (B, N_dn, 4)
    for b, truth in enumerate(targets.boxes):
        n = len(truth)
        corners = box_convert(truth, "cxcywh", "xyxy").repeat(layout.groups, 1)  # (groups * n, 4) group by group
        half = torch.cat([truth[:, 2:], truth[:, 2:]], dim=-1).repeat(layout.groups, 1) / 2
        for slots, low, high in ((layout.positive_slots(n), 0.0, lam), (layout.negative_slots(n), lam, 2 * lam)):
            moved = (box_convert(boxes[b, slots], "cxcywh", "xyxy") - corners).abs() / half
            assert bool((moved >= low - 1e-4).all() and (moved < high + 1e-4).all())
            # no label noise: every copy's content is its object's label embedding
            expected = denoising.labels(targets.labels[b].repeat(layout.groups))
            torch.testing.assert_close(queries.content[b, slots], expected)
    # image 1 has one object: its second slot of each kind in every group is padding, zero and unsupervised
    padding = torch.cat([layout.positive_slots(2)[1::2], layout.negative_slots(2)[1::2]])
    assert not queries.content[1, padding].any() and not queries.anchors[1, padding].any()


def test_denoising_flips_labels_and_is_none_without_objects():
    torch.manual_seed(0)
    denoising = ContrastiveDenoising(CLASSES, 8, groups=200, label_noise=1.0, box_noise=0.4)
    queries = denoising(_targets((1, 1)), num_queries=2)
    embedded_true = denoising.labels.weight[1]
    slots = queries.layout.positive_slots(1)
    same = (queries.content[0, slots] == embedded_true).all(-1).float().mean()
    assert 0.05 < float(same) < 0.4  # flipped to a random class: the true one about 1 in CLASSES times
    assert denoising(_targets((0, 0)), num_queries=2) is None
    assert ContrastiveDenoising(CLASSES, 8, 0, 0.5, 0.4)(_targets(), num_queries=2) is None


# ---- decoder: look forward twice


def test_look_forward_twice_reaches_the_previous_box_head_through_the_loss_only():
    torch.manual_seed(0)
    dim, levels = 16, 1
    decoder = DinoDecoder(dim, 2, levels, 2, [DenseFFN(dim, 32) for _ in range(2)])
    heads = PredictionHeads(dim, CLASSES, 2)
    with torch.no_grad():
        for head in heads.boxes:
            head.layers[-1].weight.normal_(0.0, 0.1)
    memory = torch.randn(1, 12, dim)
    shapes, starts = torch.tensor([[3, 4]]), torch.tensor([0])
    anchors = inverse_sigmoid(torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.6, 0.1, 0.3]]]))
    out = decoder(
        torch.randn(1, 2, dim), anchors, memory, torch.zeros(1, 12, dtype=torch.bool), shapes, starts, heads=heads
    )

    assert not out.references[1].requires_grad  # layer 1 is fed a detached box
    out.predictions[1].boxes.sum().backward(retain_graph=True)
    first_head = [p.grad for p in heads.boxes[0].parameters()]
    assert all(g is not None for g in first_head) and any(g.abs().sum() > 0 for g in first_head)

    heads.zero_grad(set_to_none=True)
    out.predictions[1].logits.sum().backward()  # layer 1's classes see layer 0's box only as a detached input
    assert all(p.grad is None for p in heads.boxes[0].parameters())
    # the box the loss sees for layer 0 is the reference layer 1 is fed (layer 0 looks back at fixed anchors)
    torch.testing.assert_close(out.predictions[0].boxes.detach(), out.references[1])


# ---- the assembled detector


@pytest.mark.parametrize("experts_in", ["none", "ffn", "queries"])
def test_every_variant_runs_forward_and_backward(experts_in):
    model = _model(experts_in).train()
    images, mask = _batch()
    targets = _targets()
    out = model(images, mask, domain=torch.tensor([0, 1]), targets=targets)
    assert out.final.logits.shape == (2, 6, CLASSES) and out.final.boxes.shape == (2, 6, 4)
    assert len(out.intermediate) == 1 and len(out.denoising) == 2
    assert out.layout.size == out.denoising[0].logits.shape[1] == 2 * 2 * 2
    assert out.proposals.logits.shape == (2, 6, CLASSES)
    # one routing per decoder MoE layer; GEMGR records which expert's 6 queries each of the 2 images used
    assert len(out.routings) == {"none": 0, "ffn": 2, "queries": 1}[experts_in]
    if experts_in == "queries":
        assert out.routings[0].counts.tolist() == [6, 6]
    assert all(bool(((p.boxes >= 0) & (p.boxes <= 1)).all()) for p in [out.final, *out.denoising])
    loss = sum(p.boxes.sum() + p.logits.sigmoid().sum() for p in [out.final, out.proposals, *out.denoising])
    (loss + out.aux_loss).backward()
    assert model.backbone.body.stem[0][0].weight.grad is not None
    assert model.criterion is None

    model.eval()
    with torch.no_grad():
        evaluated = model(images, mask, domain=torch.tensor([0, 1]), targets=targets)
    assert evaluated.denoising == [] and evaluated.layout is None  # denoising only in training


def test_class_heads_start_at_the_focal_prior():
    model = _model("none")
    torch.testing.assert_close(model.queries.heads.classes[0].bias, torch.full((CLASSES,), -4.59512), atol=1e-4, rtol=0)
    torch.testing.assert_close(model.selection.classes.bias, torch.full((CLASSES,), -4.59512), atol=1e-4, rtol=0)


def test_gemgr_domain_uses_only_its_experts_queries_and_heads():
    model = _model("queries", moe=_layers(assignment=(1, 0))).train()  # domain 0 -> expert 1
    images, mask = _batch()
    out = model(images, mask, domain=torch.tensor([0, 0]), targets=_targets())
    (out.final.boxes.sum() + out.final.logits.sum() + out.denoising[0].logits.sum()).backward()
    expert0, expert1 = model.queries.bank.expert(0), model.queries.bank.expert(1)
    assert all(p.grad is None for p in expert0.parameters())
    assert expert1.content.weight.grad is not None and expert1.heads.classes[-1].weight.grad is not None


def test_gemgr_mixed_batch_equals_each_sample_alone():
    model = _model("queries").eval()
    images, mask = _batch()
    with torch.no_grad():
        together = model(images, mask, domain=torch.tensor([1, 0]))
        alone = [model(images[i : i + 1], mask[i : i + 1], domain=torch.tensor([d])) for i, d in enumerate([1, 0])]
    for i in range(2):
        torch.testing.assert_close(together.final.logits[i], alone[i].final.logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(together.final.boxes[i], alone[i].final.boxes[0], atol=1e-5, rtol=1e-5)
    with model.queries.forced(0), torch.no_grad():
        forced = model(images, mask, domain=torch.tensor([1, 1]))
    torch.testing.assert_close(forced.final.logits[1], together.final.logits[1])  # domain 0's own expert


def test_gemgr_bank_holds_only_local_experts():
    model = _model("queries", moe=_layers(local_experts=[1])).train()
    assert list(model.queries.bank.members) == ["1"]
    images, mask = _batch()
    model(images, mask, domain=torch.tensor([1, 1]))
    with pytest.raises(RuntimeError, match="not held here"):
        model(images, mask, domain=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="domain"):
        model(images, mask)


def test_gemgr_needs_a_router_with_a_domain_table():
    with pytest.raises(ValueError, match="domain -> expert table"):
        _model("queries", moe=MoELayers(router_spec("topk"), RunFacts(num_experts=2), {}))


def test_active_parameters_equal_the_dense_model_and_the_backbone_does_not_depend_on_the_variant():
    dense = _model("none")
    dense_count = parameter_counts(dense)
    assert dense_count["active"] == dense_count["total"]
    for variant in ("ffn", "queries"):
        model = _model(variant)
        counts = parameter_counts(model)
        assert counts["active"] == dense_count["total"] < counts["total"]
        for a, b in zip(model.backbone.parameters(), dense.backbone.parameters(), strict=True):
            assert torch.equal(a, b)
    stem = _model("ffn", moe=stem_only_layers(2))
    for a, b in zip(stem.backbone.parameters(), dense.backbone.parameters(), strict=True):
        assert torch.equal(a, b)
    assert stem.features(_batch()[0]).shape == (2, 128)


def test_moe_layers_get_the_previous_layers_router_logits():
    model = _model("ffn", moe=MoELayers(router_spec("moepp"), RunFacts(num_experts=2), {})).train()
    seen = []
    for module in model.decoder.modules():
        if isinstance(module, MoELayer):
            module.register_forward_pre_hook(
                lambda _m, _args, kwargs: seen.append(kwargs["previous_logits"]), with_kwargs=True
            )
    images, mask = _batch()
    out = model(images, mask, domain=torch.tensor([0, 1]), targets=_targets())
    assert seen[0] is None and seen[1] is out.routings[0].logits
    assert "balance" in out.aux_losses


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="experts_in"):
        _model("everywhere")
    with pytest.raises(ValueError, match="backbone"):
        _model("none", backbone="vgg")
    model = _model("none", num_queries=200)
    with pytest.raises(ValueError, match="encoder tokens"):
        model(*_batch())


def test_backbones_give_three_levels_and_read_local_checkpoints(tmp_path):
    images, mask = _batch()
    torch.manual_seed(0)
    resnet = build_backbone("resnet18", dim=16).eval()
    features, masks = resnet(images, mask)
    assert [tuple(f.shape[-2:]) for f in features] == [(8, 8), (4, 4), (2, 2)]
    assert masks[0][1, :, 6:].all() and not masks[0][1, :, :6].any()  # padding from pixel 48 = cell 6 at stride 8
    assert resnet.pooled(images).shape == (2, 512)

    conv = build_backbone("conv", dim=16)
    file = tmp_path / "conv.pt"
    torch.save(conv.body.state_dict(), file)
    torch.manual_seed(1)
    loaded = build_backbone("conv", dim=16, checkpoint=file)
    for a, b in zip(conv.body.parameters(), loaded.body.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        build_backbone("conv", dim=16, checkpoint=tmp_path / "missing.pt")
    with pytest.raises(RuntimeError, match=r"conv\.pt"):
        build_backbone("resnet18", dim=16, checkpoint=file)
