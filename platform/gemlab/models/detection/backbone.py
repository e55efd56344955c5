"""The detector's backbone: three feature maps (strides 8, 16, 32) projected to the transformer's width.

    backbone = build_backbone("conv", dim=64)                  # or "resnet18", "resnet50"
    features, masks = backbone(images, mask)                   # per level (B, dim, H_l, W_l), (B, H_l, W_l)
    pooled = backbone.pooled(images)                           # (B, C): the planner's frozen features

``conv`` is a few hundred thousand parameters of conv-BN-ReLU, sized for
CPU runs on 96-128 px canvases; the ResNets are torchvision's, built with
``weights=None`` and optionally filled from a local state-dict file (never a
download). The backbone is the first thing a detector builds, so its weights
are the same whether the model is built whole or only for its stem (GEM's
affinity is computed before there is a plan).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet18, resnet50

BACKBONES = ("conv", "resnet18", "resnet50")


def _conv_bn_relu(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class ConvBody(nn.Module):
    """Five stride-2 stages (a second conv in the last three); maps at strides 8, 16 and 32."""

    channels = (64, 96, 128)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(3, 16, 2), _conv_bn_relu(16, 32, 2))  # stride 4
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(inputs, outputs, 2), _conv_bn_relu(outputs, outputs, 1))
            for inputs, outputs in zip((32, *self.channels[:-1]), self.channels, strict=True)
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


class ResNetBody(nn.Module):
    """A torchvision ResNet without its classifier; ``layer2..4`` give strides 8, 16, 32.

    Its submodules keep torchvision's names, so a torchvision state dict loads into it as is.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        trunk = resnet18(weights=None) if name == "resnet18" else resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        width = 1 if name == "resnet18" else 4  # basic blocks vs bottlenecks
        self.channels = (128 * width, 256 * width, 512 * width)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(images)))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


def load_body(body: nn.Module, checkpoint: str | Path) -> None:
    """Fill ``body`` from a local state-dict file (a classifier's ``fc.*`` keys are ignored).

    Raises FileNotFoundError naming a missing file, RuntimeError naming a file that is not a
    state dict or does not fit the body.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types; each means "not a state dict"
        raise RuntimeError(f"backbone checkpoint {path} could not be read as a state dict: {error}") from None
    if not isinstance(state, Mapping):
        raise RuntimeError(f"backbone checkpoint {path} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        body.load_state_dict(state)
    except RuntimeError as error:
        raise RuntimeError(f"backbone checkpoint {path} does not fit the backbone: {error}") from None


class Backbone(nn.Module):
    """A body's three maps, each projected to ``dim`` channels (1x1 conv + GroupNorm), with their masks."""

    def __init__(self, body: nn.Module, dim: int) -> None:
        super().__init__()
        self.body = body
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, dim, 1), nn.GroupNorm(math.gcd(32, dim), dim))
            for channels in body.channels
        )
        self.dim, self.levels = dim, len(body.channels)

    @property
    def pooled_dim(self) -> int:
        """Channels of :meth:`pooled` (the last stage's width)."""
        return self.body.channels[-1]

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``images`` (B, 3, S, S), ``mask`` (B, S, S) True at padding.

        Returns per level the projected map (B, dim, H_l, W_l) and its mask (B, H_l, W_l): the pixel
        mask downsampled by nearest neighbour, so a cell is padding when the pixel it samples is.
        """
        maps = self.body(images)
        features = [project(m) for project, m in zip(self.projections, maps, strict=True)]
        masks = [F.interpolate(mask[:, None].float(), size=f.shape[-2:]).squeeze(1).bool() for f in features]
        return features, masks

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C) mean of the last stage's map, before projection: GEM's frozen-backbone feature (§3.4)."""
        return self.body(images)[-1].mean(dim=(2, 3))


def build_backbone(name: str, dim: int, checkpoint: str | Path | None = None) -> Backbone:
    """The backbone ``name`` (one of :data:`BACKBONES`) projected to ``dim``, optionally from a local file.

    Raises ValueError for an unknown name or ``dim`` < 1, and what :func:`load_body` raises.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    if dim < 1:
        raise ValueError(f"backbone: dim must be >= 1, got {dim}")
    body = ConvBody() if name == "conv" else ResNetBody(name)
    if checkpoint is not None:
        load_body(body, checkpoint)
    return Backbone(body, dim)
