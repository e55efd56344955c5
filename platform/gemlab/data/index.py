"""Reading ``gemlab-data.yaml`` and checking every field before any data is read.

The index is typed by hand, so its mistakes are typos: a misspelt key, a
path that does not exist, a list where a mapping belongs. Each one ends in
one line naming the file and the field --
``gemlab-data.yaml: domain 'comic': splits.train.annotations: no such file
/data/comic/train.json`` -- and an unknown key is refused rather than
ignored, since an ignored ``image_sets`` would silently read every image.
The layout itself is described in :mod:`gemlab.data.collection`.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemlab.data.errors import DataError
from gemlab.data.records import SPLITS, TASKS
from gemlab.handwritten import checked_field, is_name, is_names, is_number, only_known_keys, read_yaml_mapping

INDEX_NAME = "gemlab-data.yaml"

# Per format, the keys of a split: (key, kind, required). Kinds: "file" and "folder" are paths that must
# exist, "name" a non-empty string, "names" a list of them.
_SPLIT_KEYS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "coco": (("annotations", "file", True), ("images", "folder", True)),
    "voc": (("root", "folder", True), ("image_set", "name", False), ("categories", "names", False)),
    "imagefolder": (("root", "folder", True),),
}
_DOMAIN_KEYS = ("name", "task", "format", "splits", "metadata_columns")
_TOP_KEYS = ("domains", "alpha")


@dataclass(frozen=True)
class DomainEntry:
    """One domain of the index, checked; split paths are absolute."""

    name: str
    task: str
    format: str
    splits: dict[str, dict[str, Any]]  # split -> reader arguments, "train" first
    metadata_columns: tuple[str, ...]
    index: Path  # the file that lists it

    @property
    def where(self) -> str:
        """The prefix of messages about this domain: ``<index>: domain '<name>'``."""
        return f"{self.index}: domain {self.name!r}"


@dataclass(frozen=True)
class Index:
    """An index file, checked: its domains in file order and the sampling exponent alpha."""

    path: Path
    domains: tuple[DomainEntry, ...]
    alpha: float


def _one_of(choices: Collection[str]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and value in choices


def _is_alpha(value: Any) -> bool:
    return is_number(value) and value >= 0


def _path(base: Path, value: str, kind: str, where: str, field: str) -> Path:
    """The absolute path a split names; raises DataError naming the field when it is not a ``kind``."""
    path = Path(value)
    path = path if path.is_absolute() else (base / path).resolve()
    if kind == "file" and not path.is_file():
        raise DataError(f"{where}: {field}: no such file {path}" + (" (it is a folder)" if path.is_dir() else ""))
    if kind == "folder" and not path.is_dir():
        raise DataError(f"{where}: {field}: no such folder {path}" + (" (it is a file)" if path.exists() else ""))
    return path


def _split(base: Path, fmt: str, split: str, spec: Any, where: str) -> dict[str, Any]:
    """A split's reader arguments, paths made absolute and checked to exist."""
    keys = _SPLIT_KEYS[fmt]
    prefix = f"splits.{split}."
    if not isinstance(spec, dict):
        raise DataError(f"{where}: splits.{split}: must be a mapping of {[key for key, _, _ in keys]}")
    only_known_keys(spec, tuple(key for key, _, _ in keys), where, DataError, f"splits.{split}")
    arguments = {}
    for key, kind, required in keys:
        if key not in spec and not required:
            continue
        test, wanted = (is_names, "a list of names") if kind == "names" else (is_name, "a non-empty string")
        value = checked_field(spec, key, where, test, wanted, DataError, prefix)
        arguments[key] = _path(base, value, kind, where, prefix + key) if kind in ("file", "folder") else value
    return arguments


def _domain(index: Path, number: int, entry: Any) -> DomainEntry:
    """The ``number``-th domain of the index, checked; messages name it once its name is known."""
    where = f"{index}: domains[{number}]"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: must be a mapping with {list(_DOMAIN_KEYS[:4])}, got {reprlib.repr(entry)}")
    name = checked_field(entry, "name", where, is_name, "a non-empty string", DataError)
    where = f"{index}: domain {name!r}"
    only_known_keys(entry, _DOMAIN_KEYS, where, DataError)
    task = checked_field(entry, "task", where, _one_of(TASKS), f"one of {', '.join(TASKS)}", DataError)
    fmt = checked_field(entry, "format", where, _one_of(_SPLIT_KEYS), f"one of {', '.join(_SPLIT_KEYS)}", DataError)
    splits = checked_field(
        entry, "splits", where, lambda v: isinstance(v, dict), "a mapping of split names to files", DataError
    )
    only_known_keys(splits, SPLITS, where, DataError, "splits")
    if "train" not in splits:
        raise DataError(f"{where}: splits: no train split")
    columns = entry.get("metadata_columns", [])
    if not is_names(columns):
        raise DataError(f"{where}: metadata_columns: must be a list of names, got {reprlib.repr(columns)}")
    ordered = sorted(splits, key=lambda split: split != "train")
    arguments = {split: _split(index.parent, fmt, split, splits[split], where) for split in ordered}
    return DomainEntry(name, task, fmt, arguments, tuple(columns), index)


def read_index(path: Path) -> Index:
    """Read and check an index file (``path`` itself, or ``path/gemlab-data.yaml`` for a folder).

    Raises DataError naming the file and the field for a missing file, text
    that is not YAML, a top level that is not a mapping, unknown or missing
    keys, values of the wrong type, an unknown task or format, a domain name
    used twice, and split paths that do not exist; ``OSError`` when the file
    cannot be read.
    """
    path = Path(path)
    index = path / INDEX_NAME if path.is_dir() else path
    if not index.exists():
        raise DataError(f"{index}: no such index file")
    config = read_yaml_mapping(index, DataError)
    only_known_keys(config, _TOP_KEYS, str(index), DataError)
    entries = checked_field(
        config, "domains", str(index), lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list", DataError
    )
    alpha = checked_field({"alpha": 1.0} | config, "alpha", str(index), _is_alpha, "a finite number >= 0", DataError)
    domains: list[DomainEntry] = []
    for number, entry in enumerate(entries):
        domain = _domain(index, number, entry)
        if any(d.name == domain.name for d in domains):
            raise DataError(f"{index}: domains[{number}]: name {domain.name!r} is used by an earlier domain")
        domains.append(domain)
    return Index(index, tuple(domains), float(alpha))
