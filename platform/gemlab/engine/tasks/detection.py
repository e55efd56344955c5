"""Detection: letterboxed images with padding masks, the detector's set loss, COCO AP per domain.

Every image is resized so its longer side is ``S`` (``data.image_size``)
and placed at the top-left of an ``S x S`` canvas; the rest is padding,
marked in a pixel mask the detector keeps out of attention. Boxes are
``(cx, cy, w, h)`` normalised to the canvas (see
:mod:`gemlab.models.detection.structures`), and a prediction goes back to
the original image's pixels by the image's scale: original pixels per
canvas unit, ``max(height, width)``.

Like classification, each worker decodes the splits of its own domains
once (the synthetic benchmark's images are 96-128 px, about 30 kB each as
uint8) and a batch is an index into tensors. Training images are flipped
left-right with probability 1/2 (inside the image, not the padding), drawn
from torch's RNG, which the worker seeds per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_bounding_boxes

from gemlab.data.dataset import load_sample
from gemlab.data.mixture import DomainMixture
from gemlab.engine.tasks import expert_share, load_shares
from gemlab.evaluation.coco import CocoEvaluator
from gemlab.models.detection.postprocess import detections, to_domain_labels
from gemlab.models.detection.structures import DetectionTargets

# ImageNet statistics: what a torchvision ResNet loaded from a checkpoint file expects.
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
DETECTIONS_PER_IMAGE = 100  # COCO's maxDets
PREVIEW_SCORE = 0.3  # boxes drawn on TensorBoard's preview images


@dataclass
class DetectionSplit:
    """One (domain, split), decoded: letterboxed uint8 images, their extents, boxes and global labels."""

    images: torch.Tensor  # (N, 3, S, S) uint8, zero outside each image
    extents: torch.Tensor  # (N, 2) long: (height, width) of each image on the canvas
    boxes: list[torch.Tensor]  # per image (n_i, 4) cxcywh on the canvas, in [0, 1]
    labels: list[torch.Tensor]  # per image (n_i,) global class ids
    scales: torch.Tensor  # (N,) original pixels per canvas unit
    sizes: torch.Tensor  # (N, 2) original (height, width) in pixels
    image_ids: list[int]
    metadata: torch.Tensor | None  # (N, M) numeric metadata columns, if the domain has any


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """``image`` (3, H, W) resized so its longer side is ``size``, on a zero ``size x size`` canvas; its factor."""
    height, width = image.shape[-2:]
    factor = size / max(height, width)
    resized = TF.resize(image, [max(1, round(height * factor)), max(1, round(width * factor))], antialias=True)
    canvas = torch.zeros((3, size, size), dtype=image.dtype)
    canvas[:, : resized.shape[1], : resized.shape[2]] = resized
    return canvas, factor


class DetectionImages:
    """The run's detection images, decoded per (domain, split) on first use, and its batches."""

    def __init__(self, mixture: DomainMixture, image_size: int) -> None:
        self.mixture, self.size = mixture, image_size
        self._cache: dict[tuple[int, str], DetectionSplit] = {}
        num_classes = len(mixture.labels.names)
        self.valid_classes = torch.zeros((len(mixture.domains), num_classes), dtype=torch.bool)  # (D, C)
        for d, mapping in enumerate(mixture.labels.local_to_global):
            self.valid_classes[d, list(mapping.values())] = True

    def split(self, domain_id: int, split: str) -> DetectionSplit:
        key = (domain_id, split)
        if key not in self._cache:
            self._cache[key] = self._decode(domain_id, split)
        return self._cache[key]

    def _decode(self, domain_id: int, split: str) -> DetectionSplit:
        domain = self.mixture.domains[domain_id]
        to_global = self.mixture.labels.local_to_global[domain_id]
        images, extents, boxes, labels, scales, sizes, metadata = [], [], [], [], [], [], []
        for sample in domain.split(split):
            image, target = load_sample(domain, sample)
            canvas, factor = letterbox(image, self.size)
            images.append(canvas)
            extents.append((round(image.shape[1] * factor), round(image.shape[2] * factor)))
            xyxy = target["boxes"].as_subclass(torch.Tensor) * factor / self.size
            boxes.append(torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], dim=1))
            labels.append(torch.tensor([to_global[c] for c in sample.category_ids], dtype=torch.long))
            scales.append(max(image.shape[1], image.shape[2]))
            sizes.append((image.shape[1], image.shape[2]))
            metadata.append([float(sample.metadata[c]) for c in domain.metadata_columns])
        return DetectionSplit(
            images=torch.stack(images),
            extents=torch.tensor(extents),
            boxes=boxes,
            labels=labels,
            scales=torch.tensor(scales, dtype=torch.float32),
            sizes=torch.tensor(sizes),
            image_ids=[sample.image_id for sample in domain.split(split)],
            metadata=torch.tensor(metadata, dtype=torch.float32) if domain.metadata_columns else None,
        )

    def _pixels(self, images: torch.Tensor, extents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images and the padding mask (True outside each image)."""
        pixels = (images.float() / 255 - _MEAN) / _STD
        rows = torch.arange(self.size)
        mask = (rows.view(1, -1, 1) >= extents[:, 0].view(-1, 1, 1)) | (
            rows.view(1, 1, -1) >= extents[:, 1].view(-1, 1, 1)
        )  # (B, S, S)
        return pixels * ~mask.unsqueeze(1), mask

    def batch(self, pairs: Sequence[tuple[int, int]], split: str = "train") -> dict[str, Any]:
        """``images`` (B, 3, S, S), ``mask`` (B, S, S), ``targets``, ``domain`` (B,), ``scales``, ``image_ids``."""
        images, extents, boxes, labels, metadata = [], [], [], [], []
        for d, index in pairs:
            part = self.split(d, split)
            metadata.append(None if part.metadata is None else part.metadata[index])
            image, box = part.images[index], part.boxes[index]
            if split == "train" and bool(torch.rand(()) < 0.5):
                width = int(part.extents[index, 1])
                image = image.clone()
                image[:, :, :width] = image[:, :, :width].flip(-1)
                box = box.clone()
                box[:, 0] = width / self.size - box[:, 0]
            images.append(image)
            extents.append(part.extents[index])
            boxes.append(box)
            labels.append(part.labels[index])
        pixels, mask = self._pixels(torch.stack(images), torch.stack(extents))
        domain = torch.tensor([d for d, _ in pairs])
        batch = {
            "images": pixels,
            "mask": mask,
            "targets": DetectionTargets(boxes, labels, self.valid_classes[domain]),
            "domain": domain,
        }
        if all(row is not None for row in metadata):
            batch["metadata"] = torch.stack(metadata)
        return batch

    def calibration(self, domain: int, split: str, count: int, seed: int) -> tuple[torch.Tensor, list[list[int]]]:
        part = self.split(domain, split)
        take = torch.as_tensor(np.random.default_rng([seed, domain]).permutation(len(part.images))[:count])
        pixels, _ = self._pixels(part.images[take], part.extents[take])
        return pixels, [sorted(set(part.labels[i].tolist())) for i in take.tolist()]


class DetectionTask:
    """Images -> boxes and classes; the model's ``criterion`` is its set loss (matching, focal, L1, GIoU)."""

    name, metric = "detection", "ap"

    def data(self, mixture: DomainMixture, image_size: int) -> DetectionImages:
        return DetectionImages(mixture, image_size)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        targets = batch["targets"]
        out = model(
            batch["images"], batch["mask"], domain=batch["domain"], targets=targets, metadata=batch.get("metadata")
        )
        terms = model.criterion(out, targets)
        # a class-level router's loss on the queries the criterion matched ({} for every other router)
        matched = model.matched_routing_losses(out, terms.matches, targets)
        task = sum(terms.values())
        stats = {"loss": task.item(), **{f"loss/{k}": v.item() for k, v in terms.items()}}
        stats.update({f"aux/{k}": v.item() for k, v in {**out.aux_losses, **matched}.items()})
        return task + out.aux_loss + sum(matched.values(), torch.zeros((), device=task.device)), stats

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, data: DetectionImages, domains: Iterable[int], split: str, batch_size: int
    ) -> dict[int, dict[str, Any]]:
        """Domain id -> COCO AP metrics of its own categories on ``split`` (pycocotools), and ``expert_load``."""
        was_training = model.training
        model.eval()
        results = {}
        for domain in domains:
            part = data.split(domain, split)
            evaluator = CocoEvaluator(data.mixture.domains[domain], split)
            evaluator.reset()
            load = None
            for start in range(0, len(part.images), batch_size):
                rows = range(start, min(start + batch_size, len(part.images)))
                batch = data.batch([(domain, i) for i in rows], split)
                out = model(batch["images"], batch["mask"], domain=batch["domain"], metadata=batch.get("metadata"))
                take = list(rows)
                found = detections(
                    out.final,
                    batch["targets"].valid_classes,
                    part.scales[take],
                    DETECTIONS_PER_IMAGE,
                    image_sizes=part.sizes[take],
                )
                to_domain_labels(found, data.mixture.labels.local_to_global[domain])
                evaluator.process([part.image_ids[i] for i in rows], found)
                counts = expert_share(out.routings)
                if counts is not None:
                    load = counts if load is None else load + counts
            results[domain] = {**evaluator.evaluate(), "expert_load": load_shares(load)}
        model.train(was_training)
        return results

    @torch.no_grad()
    def previews(self, model: nn.Module, data: DetectionImages, domains: Iterable[int], split: str) -> dict[int, Any]:
        """Domain id -> the split's first image with the boxes scored above ``PREVIEW_SCORE`` drawn and named."""
        was_training = model.training
        model.eval()
        images = {}
        for domain in domains:
            batch = data.batch([(domain, 0)], split)
            out = model(batch["images"], batch["mask"], domain=batch["domain"], metadata=batch.get("metadata"))
            found = detections(out.final, batch["targets"].valid_classes, torch.tensor([float(data.size)]), 20)[0]
            keep = found["scores"] >= PREVIEW_SCORE
            names = [
                f"{data.mixture.labels.names[int(c)]} {p:.2f}"
                for c, p in zip(found["labels"][keep], found["scores"][keep], strict=True)
            ]
            images[domain] = draw_bounding_boxes(
                data.split(domain, split).images[0], found["boxes"][keep], names, colors="red"
            )
        model.train(was_training)
        return images


DETECTION = DetectionTask()
