"""The Parquet manifest: one row per image of a collection, for auditing and joins.

Columns: domain, split, path, width, height, image_id, boxes (list of
[x, y, w, h]), category_ids, category_names, label (classification), and
one column per metadata key. ``gemlab report`` and notebooks read it without
touching the images.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gemlab.data.mixture import DomainMixture
from gemlab.files import atomic_path


def manifest_table(mixture: DomainMixture) -> pa.Table:
    """One row per (domain, split, image), in domain, split and sample order."""
    rows: dict[str, list] = {
        key: []
        for key in (
            "domain",
            "split",
            "path",
            "width",
            "height",
            "image_id",
            "boxes",
            "category_ids",
            "category_names",
            "label",
        )
    }
    metadata_keys = sorted({key for d in mixture.domains for key in d.metadata_columns})
    metadata: dict[str, list] = {key: [] for key in metadata_keys}
    for domain in mixture.domains:
        names = domain.category_names
        for split, samples in domain.splits.items():
            for sample in samples:
                rows["domain"].append(domain.name)
                rows["split"].append(split)
                rows["path"].append(str(sample.path))
                rows["width"].append(sample.width)
                rows["height"].append(sample.height)
                rows["image_id"].append(sample.image_id)
                rows["boxes"].append([list(box) for box in sample.boxes])
                rows["category_ids"].append(list(sample.category_ids))
                rows["category_names"].append([names[c] for c in sample.category_ids])
                rows["label"].append(sample.label)
                for key in metadata_keys:
                    value = sample.metadata.get(key)
                    metadata[key].append(None if value is None else str(value))
    schema = pa.schema(
        [
            ("domain", pa.string()),
            ("split", pa.string()),
            ("path", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("image_id", pa.int64()),
            ("boxes", pa.list_(pa.list_(pa.float64(), 4))),
            ("category_ids", pa.list_(pa.int64())),
            ("category_names", pa.list_(pa.string())),
            ("label", pa.int64()),
            *[(f"meta_{key}", pa.string()) for key in metadata_keys],
        ]
    )
    columns = {**rows, **{f"meta_{key}": values for key, values in metadata.items()}}
    return pa.table(columns, schema=schema)


def write_manifest(mixture: DomainMixture, path: Path) -> Path:
    """Write the manifest atomically; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        pq.write_table(manifest_table(mixture), temp)
    return path
