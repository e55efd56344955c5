"""Torch datasets over domains: images decoded per item, box-aware transforms.

Images are read with ``torchvision.io`` when an item is requested, never up
front, so building a mixture over large datasets costs only annotations.
Boxes become ``tv_tensors.BoundingBoxes`` (XYXY, tied to the image size) so
``torchvision.transforms.v2`` moves them with every flip, crop and resize.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from gemlab.data.domain import Domain
from gemlab.data.errors import DataError
from gemlab.data.mixture import DomainMixture
from gemlab.data.records import Sample

Transform = Callable[[Any, dict], tuple[Any, dict]]


def load_sample(domain: Domain, sample: Sample) -> tuple[tv_tensors.Image, dict[str, Any]]:
    """Decode one image (RGB, uint8) and build its target in the domain's own ids.

    Raises DataError naming the domain and file when the image is missing or
    unreadable (files can disappear after the annotations were read).
    """
    try:
        image = tv_tensors.Image(decode_image(str(sample.path), mode=ImageReadMode.RGB))
    except (RuntimeError, OSError) as error:
        raise DataError(f"domain {domain.name!r}: cannot read image {sample.path}: {error}") from None
    height, width = image.shape[-2:]
    target: dict[str, Any] = {"image_id": sample.image_id}
    if domain.task == "classification":
        target["label"] = sample.label
        return image, target
    xywh = torch.tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4)
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
    target["boxes"] = tv_tensors.BoundingBoxes(xyxy, format="XYXY", canvas_size=(height, width))
    target["labels"] = torch.tensor(sample.category_ids, dtype=torch.int64)
    return image, target


class DomainDataset(torch.utils.data.Dataset):
    """One split of one domain: ``dataset[i] -> (image, target)``."""

    def __init__(self, domain: Domain, split: str = "train", transform: Transform | None = None) -> None:
        self.domain, self.samples, self.transform = domain, domain.split(split), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image, target = load_sample(self.domain, self.samples[index])
        return self.transform(image, target) if self.transform else (image, target)


class MixtureDataset(torch.utils.data.Dataset):
    """Items addressed by ``(domain id, index)`` pairs, as the mixture sampler yields them.

    Targets carry ``domain`` (the GEM router's key) and labels in the
    mixture's unified label space, so one head can serve every domain.
    """

    def __init__(self, mixture: DomainMixture, split: str = "train", transform: Transform | None = None) -> None:
        self.mixture, self.split, self.transform = mixture, split, transform

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, dict[str, Any]]:
        domain_id, index = key
        domain = self.mixture.domains[domain_id]
        image, target = load_sample(domain, domain.split(self.split)[index])
        to_global = self.mixture.labels.local_to_global[domain_id]
        if domain.task == "classification":
            target["label"] = to_global[target["label"]]
        else:
            target["labels"] = target["labels"].apply_(to_global.__getitem__)
        target["domain"] = domain_id
        return self.transform(image, target) if self.transform else (image, target)
