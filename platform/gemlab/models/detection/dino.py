"""DINO (Zhang et al., 2023) assembled from its parts, and its three GEM variants.

    model = build_dino(ModelParts(num_classes, image_size, moe=layers, criterion=loss),
                       backbone="conv", dim=64, hidden=256, heads=4, points=4, encoder_layers=2,
                       decoder_layers=3, num_queries=50, dn_groups=5, label_noise=0.25, box_noise=1.0,
                       experts_in="ffn")
    out = model(images, mask, domain=domain, targets=targets)   # DetectionOutput
    loss = model.criterion(out, targets)                         # written elsewhere (criterion.py)

Backbone -> sine/level positions -> deformable encoder -> two-stage query
selection (anchors) -> [denoising queries | matching queries] -> decoder
with box refinement. ``experts_in`` says where the experts are (§3.4, §4.2):

- ``none``: Mixed-DINO, every part dense;
- ``ffn``: GEM-DINO / DINO-MoE, each decoder layer's FFN is an MoE layer of
  the run's router (GEM, top-k, Soft MoE ...: the model never knows which);
- ``queries``: GEMGR-DINO, encoder and decoder dense, each expert owning
  its content queries and prediction heads, chosen by the plan's domain ->
  expert table; a mixed batch is decoded expert group by expert group.

Class-level GEM-DINO (§4.8) is ``ffn`` with a router that learns the plan's
class -> expert map π through a per-query assignment predictor (one linear
layer; such a router has ``matched_loss``). A query's correct expert is π of
its object's class, and the model knows that class in two places. In
``forward`` (training, with targets) each denoising positive is given the
class of the object it copies (as ``token_labels``), so it runs expert π(c)
and trains the predictor there; every other query (negatives, padding,
matching queries) runs the predicted expert, as at inference. After the
criterion's Hungarian matching, :meth:`DINO.matched_routing_losses` gives the
matched queries' cross-entropy against π of their ground truth's class.

    out = model(images, mask, domain=domain, targets=targets)
    terms = model.criterion(out, targets)
    loss = terms.total + out.aux_loss + sum(model.matched_routing_losses(out, terms.matches, targets).values())
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from gemlab.models.common import ModelParts, summed_aux_losses
from gemlab.models.detection.backbone import Backbone, build_backbone
from gemlab.models.detection.criterion import Matches
from gemlab.models.detection.decoder import DinoDecoder
from gemlab.models.detection.denoising import ContrastiveDenoising, query_classes
from gemlab.models.detection.encoder import DeformableEncoder, DenseFFN, flatten_levels
from gemlab.models.detection.position import LevelPositions
from gemlab.models.detection.queries import ExpertQuerySets, QuerySet
from gemlab.models.detection.query_selection import QuerySelection
from gemlab.models.detection.structures import DetectionOutput, DetectionTargets, Prediction

EXPERTS_IN = ("none", "ffn", "queries")


class DINO(nn.Module):
    """A DINO detector from its parts; ``criterion`` is its training loss (may be None), held for checkpoints.

    Raises nothing at construction; see :meth:`forward`.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        positions: LevelPositions,
        encoder: DeformableEncoder,
        selection: QuerySelection,
        denoising: ContrastiveDenoising,
        decoder: DinoDecoder,
        queries: QuerySet | ExpertQuerySets,
        criterion: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.positions, self.encoder = backbone, positions, encoder
        self.selection, self.denoising, self.decoder, self.queries = selection, denoising, decoder, queries
        self.criterion = criterion

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled last-stage backbone feature: the router-free stem of GEM's affinity (§3.4)."""
        return self.backbone.pooled(images)

    def trunk_names(self) -> tuple[str, ...]:
        """The backbone, by name: what a pretrained file initialises and ``backbone_lr_scale`` scales."""
        return ("backbone",)

    def forward(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        *,
        domain: torch.Tensor | None = None,
        targets: DetectionTargets | None = None,
        metadata: torch.Tensor | None = None,
    ) -> DetectionOutput:
        """``images`` (B, 3, S, S), ``mask`` (B, S, S) True at padding, ``domain`` (B,) long.

        Denoising queries are added only in training mode with ``targets``. In that mode, decoder
        routers that learn a class -> expert map (those with ``matched_loss``) also get every
        query's class as ``token_labels`` (see the module docstring). Raises ValueError for fewer
        encoder tokens than queries, a missing or unknown domain where the experts need one, and
        what the MoE layers raise (a class-level router in training without ``targets``).
        """
        features, masks = self.backbone(images, mask)
        levels = flatten_levels(features, masks, self.positions(masks))
        memory = self.encoder(levels)  # (B, S, D)
        selected = self.selection(memory, levels.mask, levels.shapes)
        num_queries = selected.anchors.shape[1]
        denoise = self.denoising(targets, num_queries) if self.training and targets is not None else None
        token_labels = None  # (B, N_dn + Q): only class-level routers read them (others' labels are per sample)
        if self.training and targets is not None and any(_matched_loss(r) for r in self._decoder_routers()):
            token_labels = query_classes(targets, None if denoise is None else denoise.layout, num_queries)

        groups, routings = [], []
        for query_set, index in self.queries.assign(domain):
            take = _rows(index)
            rows = len(images) if index is None else len(index)
            content = query_set.content.weight.expand(rows, -1, -1)  # (b, Q, D)
            anchors = take(selected.anchors)
            if denoise is not None:
                content = torch.cat([take(denoise.content), content], dim=1)  # (b, N_dn + Q, D)
                anchors = torch.cat([take(denoise.anchors), anchors], dim=1)
            decoded = self.decoder(
                content,
                anchors,
                take(memory),
                take(levels.mask),
                levels.shapes,
                levels.starts,
                heads=query_set.heads,
                attention_mask=None if denoise is None else denoise.attention_mask,
                domain=take(domain),
                metadata=take(metadata),
                token_labels=take(token_labels),
            )
            groups.append((index, decoded.predictions))
            routings.extend(decoded.routings)

        query_routing = self.queries.routing(domain, num_queries)  # GEMGR: which expert's queries each sample used
        if query_routing is not None:
            routings.append(query_routing)
        layers = _merge(groups)
        split = 0 if denoise is None else denoise.layout.size
        matching = [Prediction(p.logits[:, split:], p.boxes[:, split:]) for p in layers]
        return DetectionOutput(
            final=matching[-1],
            intermediate=matching[:-1],
            proposals=selected.proposals,
            denoising=[] if denoise is None else [Prediction(p.logits[:, :split], p.boxes[:, :split]) for p in layers],
            layout=None if denoise is None else denoise.layout,
            aux_losses=summed_aux_losses(routings),
            routings=routings,
        )

    def matched_routing_losses(
        self, out: DetectionOutput, matches: Matches, targets: DetectionTargets
    ) -> dict[str, torch.Tensor]:
        """§4.8's assignment loss on the matched queries: ``{"matched_assignment": loss}``, or {} without one.

        Once matched, query q of image b stands for ground-truth object j, whose class c gives the
        correct expert π(c). Every decoder MoE layer whose router has ``matched_loss(logits,
        labels)`` (a class-level router) scores its predictor logits of the matched queries against
        those classes -- the mean cross-entropy over the matched queries towards π(c) -- and the
        layers' losses are summed, as the routers' own losses are. ``out`` is this model's forward
        in training; ``matches[b] = (query indices, target indices)`` index its matching queries,
        as the criterion gives them (``LossTerms.matches``, the final layer's).

        Raises ValueError when ``out`` lacks a routing with logits of the whole query sequence for
        each such layer, or ``matches`` does not have one pair per image.
        """
        routers = self._decoder_routers()
        if not any(_matched_loss(router) for router in routers):
            return {}
        batch, queries = out.final.logits.shape[:2]
        offset = 0 if out.layout is None else out.layout.size  # the matching queries follow the denoising ones
        length = offset + queries
        if len(out.routings) != len(routers) or len(matches) != batch:
            raise ValueError(
                f"dino: matched routing losses need one routing per decoder MoE layer ({len(routers)}) and "
                f"one match per image ({batch}); got {len(out.routings)} and {len(matches)}"
            )
        device = out.final.logits.device
        rows = torch.cat([b * length + offset + q.to(device) for b, (q, _) in enumerate(matches)])  # (M,) in B*T
        classes = torch.cat(
            [targets.labels[b][j.to(targets.labels[b].device)].to(device) for b, (_, j) in enumerate(matches)]
        ).long()  # (M,)
        losses = []
        for router, routing in zip(routers, out.routings, strict=True):
            if not _matched_loss(router):
                continue
            logits = getattr(routing, "logits", None)  # (B*T, E) the predictor's, in token order
            if logits is None or logits.shape[0] != batch * length:
                shape = None if logits is None else tuple(logits.shape)
                raise ValueError(f"dino: a class-level routing needs logits for {batch * length} queries, got {shape}")
            losses.append(router.matched_loss(logits.index_select(0, rows), classes))
        return {"matched_assignment": torch.stack(losses).sum()}

    def _decoder_routers(self) -> list[nn.Module]:
        """The router of each decoder layer whose FFN is an MoE layer, in layer order."""
        routers = (getattr(layer.ffn, "router", None) for layer in self.decoder.layers)
        return [router for router in routers if router is not None]


def _matched_loss(router: nn.Module) -> bool:
    """Whether ``router`` learns a class -> expert map from matched queries (has ``matched_loss``)."""
    return callable(getattr(router, "matched_loss", None))


def _rows(index: torch.Tensor | None) -> Callable[[torch.Tensor | None], torch.Tensor | None]:
    """A function taking rows ``index`` of a batch-first tensor (identity for None, and None stays None)."""

    def take(x: torch.Tensor | None) -> torch.Tensor | None:
        return x if index is None or x is None else x.index_select(0, index)

    return take


def _merge(groups: list[tuple[torch.Tensor | None, list[Prediction]]]) -> list[Prediction]:
    """Per-layer predictions of sample groups -> per-layer predictions of the batch in its own order."""
    if len(groups) == 1 and groups[0][0] is None:
        return groups[0][1]
    order = torch.cat([index for index, _ in groups])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    merged = []
    for layer in range(len(groups[0][1])):
        logits = torch.cat([predictions[layer].logits for _, predictions in groups]).index_select(0, inverse)
        boxes = torch.cat([predictions[layer].boxes for _, predictions in groups]).index_select(0, inverse)
        merged.append(Prediction(logits, boxes))
    return merged


def build_dino(
    parts: ModelParts,
    *,
    backbone: str = "resnet50",
    backbone_checkpoint: str | Path | None = None,
    dim: int = 256,
    hidden: int = 2048,
    expert_hidden: int | None = None,
    heads: int = 8,
    points: int = 4,
    encoder_layers: int = 6,
    decoder_layers: int = 6,
    num_queries: int = 900,
    dn_groups: int = 5,
    label_noise: float = 0.25,
    box_noise: float = 1.0,
    experts_in: str = "none",
) -> DINO:
    """DINO with its experts where ``experts_in`` says; the defaults are DINO-4scale's sizes (3 levels here).

    ``expert_hidden`` is the decoder experts' hidden width (None: ``hidden``, the dense FFNs'): a top-k
    router at equal active parameters runs k experts of ``hidden / k``.

    The backbone is built first, so its weights are the same whichever router and variant follow
    (GEM's affinity reads them before the plan exists). Raises ValueError for an unknown
    ``experts_in`` or backbone, bad sizes, ``queries`` without a router that has a domain ->
    expert table; FileNotFoundError / RuntimeError for a backbone checkpoint that is missing or does
    not fit; and what ``parts.moe`` raises.
    """
    if experts_in not in EXPERTS_IN:
        raise ValueError(f"dino: unknown experts_in {experts_in!r}; choose one of {list(EXPERTS_IN)}")
    if decoder_layers < 1 or dim % 4:
        raise ValueError(f"dino: need decoder_layers >= 1 and dim a multiple of 4, got {decoder_layers}, {dim}")
    trunk = build_backbone(backbone, dim, backbone_checkpoint)
    positions = LevelPositions(dim, trunk.levels)
    encoder = DeformableEncoder(dim, hidden, heads, trunk.levels, points, encoder_layers)
    selection = QuerySelection(dim, parts.num_classes, num_queries)
    denoising = ContrastiveDenoising(parts.num_classes, dim, dn_groups, label_noise, box_noise)
    if experts_in == "ffn":
        ffns = [parts.moe(dim, expert_hidden or hidden) for _ in range(decoder_layers)]
    else:
        ffns = [DenseFFN(dim, hidden) for _ in range(decoder_layers)]
    decoder = DinoDecoder(dim, heads, trunk.levels, points, ffns)

    def query_set() -> QuerySet:
        return QuerySet(dim, parts.num_classes, num_queries, decoder_layers)

    queries = _expert_query_sets(parts, query_set) if experts_in == "queries" else query_set()
    return DINO(
        backbone=trunk,
        positions=positions,
        encoder=encoder,
        selection=selection,
        denoising=denoising,
        decoder=decoder,
        queries=queries,
        criterion=parts.criterion,
    )


def _expert_query_sets(parts: ModelParts, build: Callable[[], QuerySet]) -> ExpertQuerySets:
    """GEMGR's per-expert query sets, routed by the run's domain -> expert table.

    Raises ValueError when ``parts.moe`` is not a set of MoE layers with a router spec, or its
    router has no domain -> expert table (only a table fixed before training can choose queries).
    """
    spec, facts = getattr(parts.moe, "spec", None), getattr(parts.moe, "facts", None)
    if spec is None or facts is None:
        raise ValueError("dino: experts_in=queries needs MoE layers with a router spec and run facts")
    if spec.domain_table is None:
        raise ValueError(
            f"dino: experts_in=queries (GEMGR-DINO) needs a router with a domain -> expert table, "
            f"and router {spec.name!r} has none; use a planned router such as gem"
        )
    table = spec.domain_table(facts)
    return ExpertQuerySets(table, facts.num_experts, build, getattr(parts.moe, "local_experts", None))
