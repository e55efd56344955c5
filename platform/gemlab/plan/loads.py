"""Task loads from a file, matched to the cost matrix's tasks by name.

Two formats: ``.csv`` with a header row (``task,load``) and one ``task,load``
row per task, or ``.json`` holding one object ``{"task": load, ...}``. The
file must give every task of the cost matrix exactly one load and name no
other task: a task the matrix does not have is a misspelt name or a file of
another experiment, and ignoring it would plan with loads nobody checked.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gemlab.plan.errors import PlanInputError

Entry = tuple[str, str, Any]  # (where in the file, task, value as read)


class _Pairs(list):
    """A JSON object as its (key, value) pairs, so a key given twice is seen, not silently overwritten."""


def _csv_entries(text: str) -> list[Entry]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = [(reader.line_num, row) for row in reader if row]
    if not rows:
        raise PlanInputError("empty file; expected a header 'task,load' and one row per task")
    header = rows[0][1]
    if len(header) != 2 or _number(header[1]) is not None:
        raise PlanInputError(f"line {rows[0][0]}: expected a header of two names such as 'task,load', got {header}")
    entries = []
    for line, row in rows[1:]:
        if len(row) != 2:
            raise PlanInputError(f"line {line}: expected 2 cells (task, load), got {len(row)}")
        task = row[0].strip()
        entries.append((f"line {line}, task {task!r}", task, row[1].strip()))
    return entries


def _json_entries(text: str) -> list[Entry]:
    try:
        data = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as error:
        raise PlanInputError(f"not valid JSON: {error}") from None
    if not isinstance(data, _Pairs):
        raise PlanInputError(f"expected a JSON object of task names to loads, got {type(data).__name__}")
    return [(f"task {task!r}", task, value) for task, value in data]


_READERS = {".csv": _csv_entries, ".json": _json_entries}


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a number or the text of one (bools are not), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond float range
        return None


def _load(where: str, value: Any) -> float:
    load = _number(value)
    if load is None:
        raise PlanInputError(f"{where}: the load {value!r} is not a number")
    if not (math.isfinite(load) and load >= 0):
        raise PlanInputError(f"{where}: a load must be a finite number >= 0, got {value!r}")
    return load


def _matched(entries: list[Entry], task_names: Sequence[str]) -> np.ndarray:
    loads: dict[str, float] = {}
    for where, task, value in entries:
        if task in loads:
            raise PlanInputError(f"{where}: duplicate task")
        loads[task] = _load(where, value)
    known = set(task_names)
    unknown = [task for task in loads if task not in known]
    if unknown:
        raise PlanInputError(f"unknown task(s) {unknown[:5]}: the cost matrix has no such task")
    missing = [name for name in task_names if name not in loads]
    if missing:
        raise PlanInputError(f"no load for task(s) {missing[:5]}")
    return np.array([loads[name] for name in task_names])


def read_loads(path: str | Path, task_names: Sequence[str]) -> np.ndarray:
    """The loads a ``.csv`` or ``.json`` file gives, in the order of ``task_names``.

    Raises :class:`PlanInputError` naming ``path`` (and the line or task) for
    another suffix, text that is not UTF-8, JSON that does not parse or is
    not an object, a CSV without a header or with a row of other than two
    cells, a load that is not a finite number >= 0, a task given twice, a
    task not in ``task_names``, and a task of ``task_names`` without a load;
    ``OSError`` when the file cannot be read.
    """
    path = Path(path)
    if path.suffix not in _READERS:
        raise PlanInputError(f"{path}: unsupported suffix {path.suffix!r}; a loads file is .csv or .json")
    data = path.read_bytes()
    try:
        return _matched(_READERS[path.suffix](data.decode("utf-8")), task_names)
    except UnicodeDecodeError as error:
        raise PlanInputError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except (PlanInputError, csv.Error) as error:
        raise PlanInputError(f"{path}: {error}") from None
