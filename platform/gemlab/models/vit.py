"""A small ViT whose every other FFN is an MoE layer (V-MoE style), or the blocks ``moe_blocks`` names.

    model = MoEViT(num_classes=10, moe=MoELayers(router_spec(name), RunFacts(num_experts=4), options))
    out = model(images, domain=domain_ids)        # out.logits, out.aux_losses, out.routings

Only the MoE layers change between experiments; the trunk is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gemlab.models.common import (
    MakeHead,
    MakeMoELayer,
    ModelOutput,
    ModelSpec,
    classifier,
    classify,
    training_criterion,
)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: nn.Module) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = ffn

    def forward(self, x: torch.Tensor, routings: list, **side: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        h = self.norm2(x)
        if isinstance(self.ffn, nn.Sequential):
            return x + self.ffn(h)
        # MoE++'s gating residual: the previous MoE layer's router logits (None for the first, or a router
        # that keeps none); routers without gating residuals ignore them
        previous = getattr(routings[-1], "logits", None) if routings else None
        y, routing = self.ffn(h, previous_logits=previous, **side)
        routings.append(routing)
        return x + y


class MoEViT(nn.Module):
    """Patch embedding, ``depth`` blocks (``moe_blocks`` of them MoE), mean pooling, a linear classifier.

    ``moe_blocks``: the indices (0-based) of the MoE blocks; None keeps V-MoE's layout, every odd-numbered
    block (1, 3, ...), whose weights and run names predate the option (MoGE places its blocks by this).

    ``moe(dim, hidden)`` builds each MoE block's FFN; ``criterion`` is the training loss (None:
    cross-entropy); ``alignment`` the feature-alignment term on the pooled features (None: none).
    Raises ValueError for an image size that is not a multiple of the patch size, for ``moe_blocks``
    that are empty, repeat a block or name one outside 0..depth-1, and whatever ``moe`` raises.
    ``moe`` None makes every block dense; ``head(dim)`` (None: linear) is the router's classifier (DQRoute).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        moe: MakeMoELayer | None,
        criterion: nn.Module | None = None,
        alignment: nn.Module | None = None,
        head: MakeHead | None = None,
        image_size: int = 32,
        patch_size: int = 4,
        channels: int = 3,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 4,
        moe_blocks: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"vit: image_size {image_size} is not a multiple of patch_size {patch_size}")
        if moe_blocks is None:
            moe_blocks = range(1, depth, 2)
        elif (
            not moe_blocks
            or len(set(moe_blocks)) != len(moe_blocks)
            or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < depth for b in moe_blocks)
        ):
            raise ValueError(f"vit: moe_blocks must be distinct blocks in 0..{depth - 1}, got {list(moe_blocks)}")
        self.patches = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.zeros(1, (image_size // patch_size) ** 2, dim))
        hidden = mlp_ratio * dim
        self.blocks = nn.ModuleList(
            _Block(
                dim,
                heads,
                moe(dim, hidden)
                if i in moe_blocks and moe is not None
                else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)),
            )
            for i in range(depth)
        )
        self.norm, self.head = nn.LayerNorm(dim), classifier(dim, num_classes, head)
        self.criterion = training_criterion(criterion)
        self.alignment = alignment

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, dim) mean token after the dense blocks before the first MoE block: the router-free stem.

        The frozen backbone of GEM's affinity: it must not depend on the router being planned.
        """
        x = self.patches(images).flatten(2).transpose(1, 2) + self.position
        for block in self.blocks:
            if not isinstance(block.ffn, nn.Sequential):
                break
            x = block(x, [])
        return x.mean(dim=1)

    def trunk_names(self) -> tuple[str, ...]:
        """The stem that :meth:`features` runs -- patch embedding, positions, the dense blocks before the first
        MoE block -- by the names of its parts: the trunk a pretrained file initialises and ``backbone_lr_scale``
        scales. Raises nothing."""
        stem = []
        for i, block in enumerate(self.blocks):
            if not isinstance(block.ffn, nn.Sequential):
                break
            stem.append(f"blocks.{i}")
        return ("patches", "position", *stem)

    def forward(
        self,
        images: torch.Tensor,
        *,
        domain: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        metadata: torch.Tensor | None = None,
    ) -> ModelOutput:
        x = self.patches(images).flatten(2).transpose(1, 2) + self.position  # (B, patches, dim)
        routings: list = []
        for block in self.blocks:
            x = block(x, routings, domain=domain, labels=labels, metadata=metadata)
        pooled = self.norm(x).mean(dim=1)  # (B, dim): what the head reads, and what alignment aligns
        return ModelOutput.collect(classify(self.head, pooled, routings, labels), routings, pooled)


SPEC = ModelSpec(
    name="vit",
    options=("patch_size", "dim", "depth", "heads", "mlp_ratio", "moe_blocks"),
    build=lambda parts, **options: MoEViT(
        num_classes=parts.num_classes,
        moe=parts.moe,
        criterion=parts.criterion,
        alignment=parts.alignment,
        head=parts.head,
        image_size=parts.image_size,
        **options,
    ),
)
