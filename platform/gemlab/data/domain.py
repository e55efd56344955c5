"""``Domain``: one dataset of a multi-domain experiment, validated once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gemlab.data.errors import DataError
from gemlab.data.records import SPLITS, TASKS, Category, Sample


def _duplicates(values) -> list:
    return [value for value, count in Counter(values).items() if count > 1]


@dataclass(frozen=True, eq=False)
class Domain:
    """A named dataset: task, label space, splits of samples, metadata columns.

    Raises DataError (naming the domain and what is wrong) for an empty name,
    an unknown task or split, duplicate category ids or names, an empty train
    split, a sample whose category (of a box, a crowd box or its label) is
    not in the label space, a sample with a different number of crowd boxes
    and crowd category ids, or a sample missing a declared metadata column.
    """

    name: str
    task: str
    categories: tuple[Category, ...]
    splits: Mapping[str, tuple[Sample, ...]]
    metadata_columns: tuple[str, ...] = ()
    _ids: frozenset[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise DataError("domain: the name must be a non-empty string")
        if self.task not in TASKS:
            raise DataError(f"domain {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        ids = [c.id for c in self.categories]
        for kind, values in (("id", ids), ("name", [c.name for c in self.categories])):
            if _duplicates(values):
                raise DataError(f"domain {self.name!r}: duplicate category {kind}(s) {_duplicates(values)}")
        unknown_splits = sorted(set(self.splits) - set(SPLITS))
        if unknown_splits:
            raise DataError(f"domain {self.name!r}: unknown split(s) {unknown_splits}; expected {SPLITS}")
        if not self.splits.get("train"):
            raise DataError(f"domain {self.name!r}: the train split is empty")
        object.__setattr__(self, "splits", MappingProxyType({k: tuple(v) for k, v in self.splits.items()}))
        object.__setattr__(self, "_ids", frozenset(ids))
        for split, samples in self.splits.items():
            for sample in samples:
                self._check_sample(split, sample)

    def _check_sample(self, split: str, sample: Sample) -> None:
        if len(sample.crowd_boxes) != len(sample.crowd_category_ids):
            raise DataError(
                f"domain {self.name!r}, split {split}: {sample.path} has {len(sample.crowd_boxes)} crowd box(es) "
                f"but {len(sample.crowd_category_ids)} crowd category id(s)"
            )
        used = set(sample.category_ids) | set(sample.crowd_category_ids)
        used |= {sample.label} if sample.label is not None else set()
        unknown = used - self._ids
        if unknown:
            raise DataError(
                f"domain {self.name!r}, split {split}: {sample.path} uses unknown category id(s) {sorted(unknown)}"
            )
        missing = [column for column in self.metadata_columns if column not in sample.metadata]
        if missing:
            raise DataError(f"domain {self.name!r}, split {split}: {sample.path} lacks metadata {missing}")

    @property
    def size(self) -> int:
        """Training images: the n_d of the sampling weights."""
        return len(self.splits["train"])

    def split(self, name: str) -> tuple[Sample, ...]:
        """The samples of one split; raises DataError naming the domain if it has no such split."""
        if name not in self.splits:
            raise DataError(f"domain {self.name!r} has no {name!r} split (it has {sorted(self.splits)})")
        return self.splits[name]

    @property
    def category_names(self) -> dict[int, str]:
        return {c.id: c.name for c in self.categories}
