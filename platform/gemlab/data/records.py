"""What a domain is made of: categories and samples (one image each).

Samples hold paths, not pixels: images are decoded per item by the dataset
(``gemlab.data.dataset``), so a domain of 100k images costs only its
annotations in memory. Boxes follow COCO's convention, ``(x, y, w, h)`` in
pixels, because COCO JSON is the format gemlab writes and evaluates with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "calib", "test")  # train is required; test is held out for `gemlab eval --split test`
TASKS = ("detection", "classification")


@dataclass(frozen=True)
class Category:
    id: int  # the domain's own id (as in its annotation files)
    name: str


@dataclass(frozen=True)
class Sample:
    """One image and its annotations, in the domain's own category ids.

    ``boxes`` are the instances a detector learns and is scored on;
    ``crowd_boxes`` the regions its annotators marked as a crowd of many
    objects, used by evaluation only.
    """

    path: Path  # absolute
    width: int
    height: int
    image_id: int = 0
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # (x, y, w, h) pixels; detection
    category_ids: tuple[int, ...] = ()  # one per box (detection)
    label: int | None = None  # category id (classification)
    metadata: Mapping[str, float | str] = field(default_factory=dict)
    # COCO crowd regions (``iscrowd: 1``), (x, y, w, h) pixels, one category id each. Kept apart from ``boxes``
    # so training targets and statistics never count them as instances; evaluation marks them ``iscrowd`` so a
    # detection inside one is neither a true nor a false positive.
    crowd_boxes: tuple[tuple[float, float, float, float], ...] = ()
    crowd_category_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class SplitReading:
    """What a reader got from one split's files.

    ``skipped`` lists the records a lenient read dropped, each as
    "file: record: reason", so the caller can report how many and which.
    """

    categories: tuple[Category, ...]
    samples: tuple[Sample, ...]
    skipped: tuple[str, ...] = ()
