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

from pathlib import Path
from typing import Any

import yaml

from gemlab.data.domain import Domain
from gemlab.data.errors import DataError
from gemlab.data.index import INDEX_NAME, DomainEntry, read_index
from gemlab.data.mixture import DomainMixture
from gemlab.data.records import SplitReading
from gemlab.files import write_text_atomically


def _read_split(fmt: str, arguments: dict[str, Any], lenient: bool) -> SplitReading:
    from gemlab.data import coco, imagefolder, voc  # readers import pycocotools/torchvision lazily

    if fmt == "coco":
        return coco.read_coco_split(arguments["annotations"], arguments["images"], lenient=lenient)
    if fmt == "voc":
        return voc.read_voc_split(
            arguments["root"], arguments.get("image_set"), categories=arguments.get("categories"), lenient=lenient
        )
    return imagefolder.read_imagefolder_split(arguments["root"], lenient=lenient)


def _read_domain(entry: DomainEntry, lenient: bool) -> tuple[Domain, list[str]]:
    """One domain of the index and the records a lenient read skipped."""
    readings: dict[str, SplitReading] = {}
    for split, arguments in entry.splits.items():  # train first
        if split != "train" and entry.format == "voc" and "categories" not in arguments:
            # VOC files carry no category list: a val split must not number its own from the objects it holds.
            arguments = {**arguments, "categories": [c.name for c in readings["train"].categories]}
        readings[split] = _read_split(entry.format, arguments, lenient)
    categories = readings["train"].categories
    skipped = []
    for split, reading in readings.items():
        if reading.categories != categories:
            raise DataError(f"{entry.where}: split {split} has a different label space from train")
        skipped.extend(reading.skipped)
    splits = {split: reading.samples for split, reading in readings.items()}
    try:
        return Domain(entry.name, entry.task, categories, splits, entry.metadata_columns), skipped
    except DataError as error:
        raise DataError(f"{entry.index}: {error}") from None


def load_collection(path: str | Path, *, lenient: bool = False) -> tuple[DomainMixture, list[str]]:
    """Read every domain an index file lists; returns the mixture and the skipped records.

    ``path`` is the index file or a folder holding ``gemlab-data.yaml``.
    Raises DataError naming the file and field for a malformed index (see
    :func:`gemlab.data.index.read_index`), naming the index and the domain
    when the data breaks a domain's rules (an empty train split, a label
    space that differs between splits, a missing metadata column), and the
    readers' DataError (file and record) for bad data unless ``lenient``.
    """
    index = read_index(Path(path))
    domains, skipped = [], []
    for entry in index.domains:
        domain, skipped_here = _read_domain(entry, lenient)
        domains.append(domain)
        skipped.extend(skipped_here)
    return DomainMixture(domains, alpha=index.alpha), skipped


def write_index(folder: Path, domains: list[dict[str, Any]], alpha: float = 1.0) -> Path:
    """Write ``folder/gemlab-data.yaml`` atomically for generated domains (paths relative to ``folder``)."""
    index = folder / INDEX_NAME
    write_text_atomically(index, yaml.safe_dump({"alpha": alpha, "domains": domains}, sort_keys=False))
    return index
