"""Reading a split from COCO JSON, and the record checks every reader shares.

COCO is the record model gemlab works in (``records.Sample`` holds COCO
boxes), so the VOC and image-folder readers reuse the checks defined here: a
box must lie inside its image, an image file must exist inside the split's
images folder, and a bad record either stops the read (DataError naming the
file and the record) or, when reading leniently, is skipped and listed as
"file: record: reason".

Crowd annotations (``iscrowd: 1``, any non-zero value) mark a region of many
objects, which a detector should neither learn as one instance nor be
penalised for finding. They pass the same checks as other annotations and go
to ``Sample.crowd_boxes`` / ``crowd_category_ids``, apart from ``boxes``: the
training targets and the statistics never see them, while the COCO evaluator
(``gemlab.evaluation.coco``) gives them back to pycocotools with ``iscrowd:
1``, so a detection inside a crowd region is ignored rather than counted as a
false positive, as COCO's rules say.

An annotation file that is empty (0 bytes) is refused as such: it is the
usual trace of a copy or a write that was cut short.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from gemlab.data.checks import BadRecords, ExistingFiles, box_problem, path_inside
from gemlab.data.errors import DataError
from gemlab.data.records import Category, Sample, SplitReading


# JSON gives exactly these types (``type(True) is bool``, so booleans fail both tests).
def _integer(value: Any) -> bool:
    return type(value) is int


def _number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _scalars(value: Any) -> bool:
    return type(value) is dict and all(isinstance(v, str) or _number(v) for v in value.values())


def _box(value: Any) -> bool:
    return type(value) is list and len(value) == 4 and all(map(_number, value))


# Per section: (field, test, what it must be, required).
_SCHEMA: dict[str, tuple[tuple[str, Callable[[Any], bool], str, bool], ...]] = {
    "categories": (
        ("id", _integer, "an integer", True),
        ("name", lambda v: isinstance(v, str), "a string", True),
    ),
    "images": (
        ("id", _integer, "an integer", True),
        ("file_name", lambda v: isinstance(v, str) and v != "", "a non-empty string", True),
        ("width", lambda v: _integer(v) and v > 0, "a positive integer", True),
        ("height", lambda v: _integer(v) and v > 0, "a positive integer", True),
        ("metadata", _scalars, "an object of strings and numbers", False),
    ),
    "annotations": (
        ("id", _integer, "an integer", True),
        ("image_id", _integer, "an integer", True),
        ("category_id", _integer, "an integer", True),
        ("bbox", _box, "[x, y, w, h] numbers", True),
        ("iscrowd", _integer, "an integer", False),
    ),
}


def _load_json(file: Path) -> Any:
    try:
        text = file.read_bytes()
    except OSError as error:
        raise DataError(f"{file}: cannot read: {error.strerror}") from None
    if not text:
        raise DataError(f"{file}: not JSON: the file is empty (0 bytes)")
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{file}: not JSON: {error}") from None


def _check_structure(file: Path, data: Any) -> None:
    """Raise DataError unless ``data`` has the sections, fields and types of COCO detection JSON."""
    not_coco = f"{file}: not COCO detection JSON"
    if not isinstance(data, dict):
        raise DataError(f"{not_coco}: expected an object with images, annotations and categories lists")
    for section, fields in _SCHEMA.items():
        records = data.get(section)
        if not isinstance(records, list):
            raise DataError(f"{not_coco}: {section!r} is missing or not a list")
        for number, record in enumerate(records):
            if not isinstance(record, dict):
                raise DataError(f"{not_coco}: {section}[{number}] is not an object")
            for key, test, wanted, required in fields:
                if (key in record and not test(record[key])) or (required and key not in record):
                    raise DataError(f"{not_coco}: {section}[{number}]: {key!r} must be {wanted}")
    repeated = sorted(i for i, n in Counter(c["id"] for c in data["categories"]).items() if n > 1)
    if repeated:
        raise DataError(f"{not_coco}: duplicate category id(s) {repeated}")


def quiet_index(data: dict) -> COCO:
    """pycocotools' index of the (already checked) dataset, without its progress prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _image_record(image: dict) -> str:
    return f"image id {image['id']} ({image['file_name']})"


def read_coco_split(annotations: Path, images: Path, *, lenient: bool = False) -> SplitReading:
    """Read one split: a COCO JSON file and the folder its images' ``file_name``s are relative to.

    Categories come sorted by id, samples in image-id order with each image's
    boxes (and, apart, its crowd boxes) in file order, image paths absolute.
    Raises DataError naming the file when it is unreadable, empty, not JSON,
    or not COCO detection JSON (always,
    even when ``lenient``) or when the images folder is missing; and naming
    the file and the record -- unless ``lenient``, which skips and lists them
    -- for duplicate image ids, a ``file_name`` that leads out of the images
    folder (absolute, or ``..`` past it), image files missing on disk (the
    image goes with its annotations), annotations of unknown images or
    categories, and degenerate or out-of-image boxes (the annotation goes
    alone; crowd annotations are checked alike).
    """
    data = _load_json(annotations)
    _check_structure(annotations, data)
    if not images.is_dir():
        raise DataError(f"{annotations}: images folder {images} does not exist")
    coco = quiet_index(data)
    bad, files, root = BadRecords(lenient), ExistingFiles(), images.resolve()
    excluded: set[int] = set()  # image ids skipped together with their annotations
    counts = Counter(image["id"] for image in data["images"])
    for image in data["images"]:
        if counts[image["id"]] > 1:
            bad.report(annotations, _image_record(image), "duplicate image id")
            excluded.add(image["id"])
    paths: dict[int, Path] = {}
    for image_id in sorted(coco.imgs.keys() - excluded):
        image = coco.imgs[image_id]
        path = path_inside(root, image["file_name"])
        if path is None:
            bad.report(annotations, _image_record(image), f"file_name leads out of the images folder {root}")
            excluded.add(image_id)
        elif path in files:
            paths[image_id] = path
        else:
            bad.report(annotations, _image_record(image), f"image file {path} is missing")
            excluded.add(image_id)
    kept: defaultdict[int, list[dict]] = defaultdict(list)
    for annotation in data["annotations"]:
        image_id = annotation["image_id"]
        if image_id in excluded:
            continue
        problem = _annotation_problem(annotation, coco)
        if problem:
            bad.report(annotations, f"annotation id {annotation['id']} (image id {image_id})", problem)
        else:
            kept[image_id].append(annotation)
    categories = tuple(Category(c["id"], c["name"]) for c in sorted(data["categories"], key=lambda c: c["id"]))
    samples = tuple(_sample(coco.imgs[image_id], path, kept[image_id]) for image_id, path in paths.items())
    return SplitReading(categories, samples, tuple(bad.skipped))


def _annotation_problem(annotation: dict, coco: COCO) -> str | None:
    image = coco.imgs.get(annotation["image_id"])
    if image is None:
        return f"unknown image id {annotation['image_id']}"
    if annotation["category_id"] not in coco.cats:
        return f"unknown category id {annotation['category_id']}"
    problem = box_problem(annotation["bbox"], image["width"], image["height"])
    return problem and f"bbox {annotation['bbox']}: {problem}"


def _sample(image: dict, path: Path, annotations: list[dict]) -> Sample:
    instances = [a for a in annotations if not a.get("iscrowd", 0)]
    crowds = [a for a in annotations if a.get("iscrowd", 0)]
    return Sample(
        path=path,
        width=image["width"],
        height=image["height"],
        image_id=image["id"],
        boxes=tuple(tuple(float(v) for v in a["bbox"]) for a in instances),
        category_ids=tuple(a["category_id"] for a in instances),
        metadata=dict(image.get("metadata", {})),
        crowd_boxes=tuple(tuple(float(v) for v in a["bbox"]) for a in crowds),
        crowd_category_ids=tuple(a["category_id"] for a in crowds),
    )
