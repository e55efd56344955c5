"""A *collection*: the index file that says where each domain of an experiment lives.

``gemlab-data.yaml`` lists domains, each with its task, its format and, per
split, the files to read (paths relative to the index file's folder, or
absolute)::

    domains:
      - name: voc
        task: detection
        format: voc                     # coco | voc | imagefolder
        splits:
          train: {root: /data/VOC2007, image_set: trainval}
          val:   {root: /data/VOC2007, image_set: test}
      - name: comic
        task: detection
        format: coco
        splits:
          train: {annotations: comic/train.json, images: comic/images}
      - name: digits-rot0
        task: classification
        format: imagefolder
        splits:
          train: {root: digits/rot0/train}
    alpha: 1.0                           # optional: p_d ∝ n_d^alpha

The generators write this file next to what they generate, and users write
one by hand to point gemlab at datasets on their disks (``docs/datasets.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gemlab.data.domain import Domain
from gemlab.data.errors import DataError
from gemlab.data.mixture import DomainMixture
from gemlab.data.records import SplitReading
from gemlab.files import write_text_atomically

INDEX_NAME = "gemlab-data.yaml"


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (base / path).resolve()


def _read_split(base: Path, fmt: str, spec: Mapping[str, Any], where: str, lenient: bool) -> SplitReading:
    from gemlab.data import coco, imagefolder, voc  # readers import pycocotools/torchvision lazily

    try:
        if fmt == "coco":
            return coco.read_coco_split(
                _resolve(base, spec["annotations"]), _resolve(base, spec["images"]), lenient=lenient
            )
        if fmt == "voc":
            return voc.read_voc_split(
                _resolve(base, spec["root"]), spec.get("image_set"), categories=spec.get("categories"), lenient=lenient
            )
        if fmt == "imagefolder":
            return imagefolder.read_imagefolder_split(_resolve(base, spec["root"]), lenient=lenient)
    except KeyError as missing:
        raise DataError(f"{where}: missing field {missing}") from None
    raise DataError(f"{where}: unknown format {fmt!r}; expected coco, voc or imagefolder")


def load_collection(path: str | Path, *, lenient: bool = False) -> tuple[DomainMixture, list[str]]:
    """Read every domain an index file lists; returns the mixture and the skipped records.

    ``path`` is the index file or a folder holding ``gemlab-data.yaml``.
    Raises DataError naming the file and field for a malformed index, and the
    readers' DataError (file and record) for bad data unless ``lenient``.
    """
    path = Path(path)
    index = path / INDEX_NAME if path.is_dir() else path
    if not index.exists():
        raise DataError(f"{index}: no such index file")
    config = yaml.safe_load(index.read_text())
    if not isinstance(config, dict) or not isinstance(config.get("domains"), list):
        raise DataError(f"{index}: expected a mapping with a 'domains' list")
    base, domains, skipped = index.parent, [], []
    for number, entry in enumerate(config["domains"]):
        where = f"{index}: domains[{number}]"
        for key in ("name", "task", "format", "splits"):
            if key not in entry:
                raise DataError(f"{where}: missing field {key!r}")
        where = f"{index}: domain {entry['name']!r}"
        if "train" not in entry["splits"]:
            raise DataError(f"{where}: no train split")
        readings = {}
        for split, spec in sorted(entry["splits"].items(), key=lambda item: item[0] != "train"):
            if split != "train" and entry["format"] == "voc" and "categories" not in spec:
                # VOC files carry no category list: a val split must not number its own from the objects it holds.
                spec = {**spec, "categories": [c.name for c in readings["train"].categories]}
            readings[split] = _read_split(base, entry["format"], spec, f"{where}, split {split}", lenient)
        categories = readings["train"].categories
        for split, reading in readings.items():
            if reading.categories != categories:
                raise DataError(f"{where}: split {split} has a different label space from train")
            skipped.extend(reading.skipped)
        domains.append(
            Domain(
                entry["name"],
                entry["task"],
                categories,
                {split: reading.samples for split, reading in readings.items()},
                tuple(entry.get("metadata_columns", ())),
            )
        )
    return DomainMixture(domains, alpha=float(config.get("alpha", 1.0))), skipped


def write_index(folder: Path, domains: list[dict[str, Any]], alpha: float = 1.0) -> Path:
    """Write ``folder/gemlab-data.yaml`` atomically for generated domains (paths relative to ``folder``)."""
    index = folder / INDEX_NAME
    write_text_atomically(index, yaml.safe_dump({"alpha": alpha, "domains": domains}, sort_keys=False))
    return index
