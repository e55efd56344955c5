"""A small ViT whose every other FFN is an MoE layer (V-MoE style).

    model = MoEViT(num_classes=10, moe=MoELayers(router_spec(name), RunFacts(num_experts=4), options))
    out = model(images, domain=domain_ids)        # out.logits, out.aux_losses, out.routings

Only the MoE layers change between experiments; the trunk is the same.
"""

from __future__ import annotations

import torch
from torch import nn

from gemlab.models.common import MakeMoELayer, ModelOutput, ModelSpec, training_criterion


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
        y, routing = self.ffn(h, **side)
        routings.append(routing)
        return x + y


class MoEViT(nn.Module):
    """Patch embedding, ``depth`` blocks (odd-numbered ones MoE), mean pooling, a linear classifier.

    ``moe(dim, hidden)`` builds each MoE block's FFN; ``criterion`` is the training loss (None:
    cross-entropy). Raises ValueError for an image size that is not a multiple of the patch size,
    and whatever ``moe`` raises.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        moe: MakeMoELayer,
        criterion: nn.Module | None = None,
        image_size: int = 32,
        patch_size: int = 4,
        channels: int = 3,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"vit: image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patches = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.zeros(1, (image_size // patch_size) ** 2, dim))
        hidden = mlp_ratio * dim
        self.blocks = nn.ModuleList(
            _Block(
                dim,
                heads,
                moe(dim, hidden) if i % 2 else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)),
            )
            for i in range(depth)
        )
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)
        self.criterion = training_criterion(criterion)

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
        return ModelOutput.collect(self.head(self.norm(x).mean(dim=1)), routings)


SPEC = ModelSpec(
    name="vit",
    options=("patch_size", "dim", "depth", "heads", "mlp_ratio"),
    build=lambda parts, **options: MoEViT(
        num_classes=parts.num_classes,
        moe=parts.moe,
        criterion=parts.criterion,
        image_size=parts.image_size,
        **options,
    ),
)
