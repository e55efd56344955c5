"""Box-aware transform presets (torchvision.transforms.v2).

v2 transforms move ``BoundingBoxes`` together with the image; the final
``SanitizeBoundingBoxes`` drops boxes that a crop made degenerate, with their
labels, so the detector never sees an empty box.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def detection_transforms(size: int, train: bool) -> v2.Compose:
    """Resize to ``size`` x ``size`` (and flip / jitter scale when training), float in [0, 1]."""
    augment = [v2.RandomHorizontalFlip(0.5), v2.RandomAffine(degrees=0, scale=(0.8, 1.2))] if train else []
    return v2.Compose(
        [
            *augment,
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.SanitizeBoundingBoxes(min_size=1.0),
        ]
    )


def classification_transforms(size: int, train: bool) -> v2.Compose:
    """Resize to ``size`` x ``size`` (and flip / crop when training), float in [0, 1]."""
    augment = [v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True)] if train else []
    return v2.Compose([*augment, v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True)])
