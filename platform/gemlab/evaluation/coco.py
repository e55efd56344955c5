"""COCO box AP of one domain's split, computed by pycocotools from records held in memory.

The ground truth is built from the split's ``Sample``s -- image ids and
sizes, boxes and the domain's own category ids -- with no file written or
read. Crowd regions (``Sample.crowd_boxes``) go in with ``iscrowd: 1``, so
COCOeval applies COCO's rule to them: a detection that falls on a crowd
region (IoU with a crowd region is the share of the *detection* inside it)
and matches no ordinary object is ignored -- neither a true nor a false
positive -- and a crowd region is never a missed object.

Areas (for ``ap_small`` / ``ap_medium`` / ``ap_large``) are box areas,
``w · h``: gemlab keeps no masks, while COCO's own files give the mask
area, so the size split of a COCO domain differs a little from the
official numbers (AP over all sizes does not depend on areas).

What ``evaluate`` gives where a metric has nothing to measure: NaN when
there is no ground truth (for ``ap``, no ordinary box in the split; for
``ap_small`` etc., none of that size) -- COCOeval's ``-1`` becomes NaN --
and 0.0 when there is ground truth but no detection (every object missed).
So a NaN says "undefined", never "the detector found nothing".
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence

import torch
from pycocotools.cocoeval import COCOeval

from gemlab.data.coco import quiet_index
from gemlab.data.coco_writer import sample_annotations
from gemlab.data.domain import Domain
from gemlab.data.errors import DataError

# COCOeval.stats[0:6], in order (maxDets = 100, IoU 0.50:0.95 unless named).
METRICS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


def ground_truth(domain: Domain, split: str) -> dict:
    """The COCO dictionary of a split's ground truth: images, boxes and crowd boxes (``iscrowd: 1``), categories.

    Annotation ids count from 1 (pycocotools takes id 0 for "unmatched").
    Raises DataError when the domain is not a detection domain, has no such
    split, or the split repeats an image id.
    """
    if domain.task != "detection":
        raise DataError(f"domain {domain.name!r}: COCO evaluation needs a detection domain, not {domain.task}")
    samples = domain.split(split)
    images, annotations, seen = [], [], set()
    for sample in samples:
        if sample.image_id in seen:
            raise DataError(f"domain {domain.name!r}, split {split}: image id {sample.image_id} is used twice")
        seen.add(sample.image_id)
        images.append({"id": sample.image_id, "width": sample.width, "height": sample.height})
        annotations += sample_annotations(sample, first_id=len(annotations) + 1)
    categories = [{"id": c.id, "name": c.name} for c in domain.categories]
    return {"images": images, "annotations": annotations, "categories": categories}


class CocoEvaluator:
    """COCO box AP (pycocotools' ``COCOeval``, ``iouType="bbox"``) of one domain's split.

    ``process`` takes detections in the domain's own category ids -- map the
    detector's global ids back first (``LabelSpace.local_to_global``, or
    :func:`gemlab.models.detection.postprocess.to_domain_labels`).
    ``evaluate`` gives :data:`METRICS`; see the module docstring for NaN
    and 0.0. Raises DataError as :func:`ground_truth` does.
    """

    def __init__(self, domain: Domain, split: str) -> None:
        self.domain, self.split = domain, split
        self._truth = quiet_index(ground_truth(domain, split))
        self._category_ids = frozenset(self._truth.getCatIds())
        self.reset()

    def reset(self) -> None:
        self._detections: list[dict] = []

    def process(self, image_ids: Sequence[int], detections: list[dict[str, torch.Tensor]]) -> None:
        """Add one batch: per image its id and a dict of ``boxes`` (k, 4) xyxy pixels, ``scores`` (k,), ``labels`` (k,).

        Raises ValueError naming the image when the lists differ in length,
        an image id is not in the split, shapes disagree, a box or score is
        not finite, or a label is not one of the domain's category ids (a
        global id that was not mapped back, most likely).
        """
        if len(image_ids) != len(detections):
            raise ValueError(f"coco evaluation: {len(image_ids)} image ids but {len(detections)} detection lists")
        for image_id, found in zip(image_ids, detections, strict=True):
            where = f"coco evaluation of {self.domain.name!r} ({self.split}), image id {image_id}"
            if image_id not in self._truth.imgs:
                raise ValueError(f"{where}: not an image of the split")
            boxes = torch.as_tensor(found["boxes"], dtype=torch.float64).cpu().reshape(-1, 4)
            scores = torch.as_tensor(found["scores"], dtype=torch.float64).cpu().reshape(-1)
            labels = torch.as_tensor(found["labels"]).cpu().reshape(-1).tolist()
            if not len(boxes) == len(scores) == len(labels):
                raise ValueError(f"{where}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
            if not (boxes.isfinite().all() and scores.isfinite().all()):
                raise ValueError(f"{where}: a box or score is not finite")
            unknown = sorted(set(labels) - self._category_ids)
            if unknown:
                raise ValueError(f"{where}: label(s) {unknown} are not category ids of the domain")
            for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels, strict=True):
                width, height = x2 - x1, y2 - y1
                self._detections.append(
                    {
                        "id": len(self._detections) + 1,  # from 1, as in the ground truth
                        "image_id": image_id,
                        "category_id": int(label),
                        "bbox": [x1, y1, width, height],
                        "score": score,
                        "area": width * height,
                        "iscrowd": 0,
                    }
                )

    def evaluate(self) -> dict[str, float]:
        """The six COCO AP numbers of everything processed since ``reset``; pycocotools' prints are swallowed."""
        truth = self._truth.dataset
        results = quiet_index(
            {"images": truth["images"], "categories": truth["categories"], "annotations": list(self._detections)}
        )
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation = COCOeval(self._truth, results, iouType="bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return {name: float(v) if v >= 0 else math.nan for name, v in zip(METRICS, evaluation.stats, strict=False)}
