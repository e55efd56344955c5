"""Writing a split as COCO JSON, the format gemlab generates and evaluates with."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from gemlab.data.records import Category, Sample
from gemlab.files import write_text_atomically


def sample_annotations(sample: Sample, first_id: int) -> list[dict]:
    """A sample's COCO annotations, ids from ``first_id``: its boxes, then its crowd regions (``iscrowd: 1``).

    Areas are box areas (gemlab keeps no segmentations). Raises nothing.
    """
    records = [(0, box, c) for box, c in zip(sample.boxes, sample.category_ids, strict=True)]
    records += [(1, box, c) for box, c in zip(sample.crowd_boxes, sample.crowd_category_ids, strict=True)]
    return [
        {
            "id": first_id + number,
            "image_id": sample.image_id,
            "category_id": category_id,
            "bbox": [float(v) for v in box],
            "area": float(box[2] * box[3]),
            "iscrowd": crowd,
        }
        for number, (crowd, box, category_id) in enumerate(records)
    ]


def coco_dict(categories: Sequence[Category], samples: Sequence[Sample], images_root: Path) -> dict:
    """The COCO dictionary of a split; image file names are relative to ``images_root``.

    Annotation ids count from 1 in sample order (each sample's boxes, then its
    crowd boxes with ``iscrowd: 1``), so the same samples give the same file.
    ``area`` is the box area: gemlab keeps no masks. Raises ValueError when a
    sample's boxes and category ids differ in length.
    """
    images, annotations = [], []
    for sample in samples:
        images.append(
            {
                "id": sample.image_id,
                "file_name": os.path.relpath(sample.path, images_root),
                "width": sample.width,
                "height": sample.height,
                **({"metadata": dict(sample.metadata)} if sample.metadata else {}),
            }
        )
        annotations += sample_annotations(sample, first_id=len(annotations) + 1)
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.id, "name": c.name} for c in categories],
    }


def write_coco(path: Path, categories: Sequence[Category], samples: Sequence[Sample], images_root: Path) -> None:
    """Write the split's COCO JSON atomically (nothing half-written on error)."""
    write_text_atomically(path, json.dumps(coco_dict(categories, samples, images_root), sort_keys=True))
