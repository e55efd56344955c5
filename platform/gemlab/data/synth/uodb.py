"""``synth-uodb``: a miniature multi-domain detection benchmark, generated (no download).

Nine domains modelled on UODB, each with its own label space, PNG images and
one COCO JSON per split, plus the ``gemlab-data.yaml`` index. Two pairs
reproduce the conflicts that make multi-domain training hard:

* **label mismatch** -- ``driving`` and ``traffic`` show the same road
  scenes with cars, pedestrians, cyclists *and* signs, but ``driving``
  annotates only the former and ``traffic`` only the signs (KITTI / LISA):
  each domain's unannotated objects are real objects to the other. Their
  boxes are kept in each image's ``metadata.unannotated_boxes``.
* **domain shift** -- ``photo`` and ``aerial`` share car, plane and ship,
  seen from the ground with texture or from above, small and many (COCO / DOTA).

Train sizes span 800 to 16 images (50:1). Every image is drawn from a random
stream seeded by (seed, domain, split, image), so the output is byte-identical
whatever the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemlab.data.checks import require_new_folder
from gemlab.data.coco_writer import write_coco
from gemlab.data.collection import write_index
from gemlab.data.errors import DataError
from gemlab.data.records import Category, Sample
from gemlab.data.synth.styles import paint
from gemlab.files import staged_folder

_CHUNK = 64  # images per worker task


@dataclass(frozen=True)
class DomainSpec:
    name: str
    style: str
    categories: tuple[str, ...]  # the annotated label space, ids 1..K in this order
    sizes: tuple[int, int, int]  # train, val, calib images at scale 1
    objects: tuple[int, int]  # annotated objects per image (inclusive range)
    distractors: tuple[str, ...] = ()  # drawn but never annotated (the label-mismatch pair)


SYNTH_UODB: tuple[DomainSpec, ...] = (
    DomainSpec("photo", "photo", ("car", "person", "plane", "ship", "dog"), (800, 80, 32), (1, 4)),
    DomainSpec("aerial", "aerial", ("car", "plane", "ship"), (400, 40, 32), (6, 16)),
    DomainSpec(
        "driving",
        "road",
        ("car", "pedestrian", "cyclist"),
        (500, 50, 32),
        (2, 5),
        ("stop_sign", "speed_sign", "warning_sign"),
    ),
    DomainSpec(
        "traffic",
        "road",
        ("stop_sign", "speed_sign", "warning_sign"),
        (200, 20, 32),
        (1, 3),
        ("car", "pedestrian", "cyclist"),
    ),
    DomainSpec("comic", "comic", ("person", "dog", "cat", "bird"), (120, 24, 16), (1, 3)),
    DomainSpec("clipart", "clipart", ("person", "car", "bird", "bottle"), (60, 20, 16), (1, 3)),
    DomainSpec("watercolour", "watercolour", ("person", "dog", "bird"), (100, 20, 16), (1, 3)),
    DomainSpec("medical", "medical", ("lesion",), (300, 30, 32), (1, 3)),
    DomainSpec("faces", "portrait", ("face",), (16, 8, 8), (1, 3)),
)
GENERATED_SPLITS = ("train", "val", "calib")  # no test split: a generated benchmark can draw new images instead
_MIN_IMAGES = (2, 1, 1)  # per split, whatever the scale: every split must exist


def split_sizes(spec: DomainSpec, scale: float) -> dict[str, int]:
    return {
        split: max(low, round(n * scale))
        for split, n, low in zip(GENERATED_SPLITS, spec.sizes, _MIN_IMAGES, strict=True)
    }


def _xywh(box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)


def _render(job: tuple) -> list[dict]:
    """Draw and write images ``start .. start + count - 1`` of one domain split (runs in a worker)."""
    folder, seed, domain_index, split_index, start, count, size = job
    spec = SYNTH_UODB[domain_index]
    records = []
    for index in range(start, start + count):
        rng = np.random.default_rng([seed, domain_index, split_index, index])
        wanted = [
            spec.categories[k]
            for k in rng.integers(0, len(spec.categories), rng.integers(*spec.objects, endpoint=True))
        ]
        extra = (
            [spec.distractors[k] for k in rng.integers(0, len(spec.distractors), rng.integers(1, 3))]
            if spec.distractors
            else []
        )
        scene = wanted + extra
        order = rng.permutation(len(scene))
        image, boxes = paint(spec.style, rng, size, [scene[k] for k in order])
        annotated = order < len(wanted)
        name = f"{index + 1:06d}.png"
        image.save(Path(folder) / name, optimize=False)
        kept = [(scene[k], box) for k, box, own in zip(order, boxes, annotated, strict=True) if own and box]
        hidden = [_xywh(box) for box, own in zip(boxes, annotated, strict=True) if not own and box]
        records.append(
            {
                "file": name,
                "boxes": [_xywh(box) for _, box in kept],
                "categories": [spec.categories.index(c) + 1 for c, _ in kept],
                "metadata": {"unannotated_boxes": json.dumps(hidden)} if spec.distractors else {},
            }
        )
    return records


def generate_synth_uodb(
    out: Path, *, seed: int = 0, image_size: int = 128, scale: float = 1.0, workers: int = 2
) -> Path:
    """Write the benchmark to ``out`` and return its index file.

    Raises DataError if ``out`` is a file or a folder that is not empty, or
    for a negative seed or a non-positive size, scale or worker count, and
    OSError naming ``out`` when its folder cannot be written. Generation
    happens in a hidden sibling folder renamed to ``out`` at the end, so a
    failed run leaves nothing behind.
    """
    if seed < 0 or image_size < 32 or not scale > 0 or workers < 1:
        raise DataError(
            "synth-uodb: need seed >= 0, image_size >= 32, scale > 0, workers >= 1 "
            f"(got {seed}, {image_size}, {scale}, {workers})"
        )
    out = require_new_folder(out)
    with staged_folder(out) as staging:
        jobs, parts = [], []  # parts: (domain index, split, image folder, its jobs)
        for d, spec in enumerate(SYNTH_UODB):
            for s, (split, count) in enumerate(split_sizes(spec, scale).items()):
                folder = staging / spec.name / "images" / split
                folder.mkdir(parents=True)
                first = len(jobs)
                jobs += [
                    (str(folder), seed, d, s, start, min(_CHUNK, count - start), image_size)
                    for start in range(0, count, _CHUNK)
                ]
                parts.append((d, split, folder, slice(first, len(jobs))))
        results = _run(jobs, workers)
        entries = {
            spec.name: {"name": spec.name, "task": "detection", "format": "coco", "splits": {}} for spec in SYNTH_UODB
        }
        for d, split, folder, chunks in parts:
            spec = SYNTH_UODB[d]
            records = [record for chunk in results[chunks] for record in chunk]
            samples = [
                Sample(
                    folder / r["file"],
                    image_size,
                    image_size,
                    i + 1,
                    tuple(map(tuple, r["boxes"])),
                    tuple(r["categories"]),
                    metadata=r["metadata"],
                )
                for i, r in enumerate(records)
            ]
            categories = [Category(i + 1, name) for i, name in enumerate(spec.categories)]
            write_coco(staging / spec.name / "annotations" / f"{split}.json", categories, samples, folder)
            entries[spec.name]["splits"][split] = {
                "annotations": f"{spec.name}/annotations/{split}.json",
                "images": f"{spec.name}/images/{split}",
            }
        write_index(staging, list(entries.values()))
    return out / "gemlab-data.yaml"


def _run(jobs: list[tuple], workers: int) -> list[list[dict]]:
    if workers == 1:
        return [_render(job) for job in jobs]
    # spawn: the parent may hold torch threads, which fork would copy in a broken state
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_render, jobs))
