"""GEM affinity matrices ``c_ij = cos(mean feature of dataset i, k-means++ anchor j)``.

Every way a matrix enters the planner (features, .csv, .parquet, .npz, .npy) ends in :class:`CostMatrix`,
which validates once, so solvers never meet NaNs, mismatched shapes or ambiguous names. Floats round-trip
bit-for-bit through every format (the CSV uses Python's shortest exact ``repr``), so a saved matrix reproduces
its plan.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemlab.files import atomic_path
from gemlab.plan.errors import PlanInputError

KMEANS_N_INIT = 10  # fixed, so that the anchors depend only on (features, E, seed)
_TASK_COLUMN = "task"  # CSV header label cell and parquet name of the task-names column
_NPZ_KEYS = ("costs", "tasks", "experts")


def _names(names: Iterable[object], count: int, field: str, axis: str) -> tuple[str, ...]:
    names = tuple(names)
    if len(names) != count:
        raise PlanInputError(f"{field}: {len(names)} names for {count} {axis}")
    for name in names:
        if not isinstance(name, str) or not name:
            raise PlanInputError(f"{field}: names must be non-empty strings, got {name!r}")
    duplicates = [name for name, seen in Counter(names).items() if seen > 1]
    if duplicates:
        raise PlanInputError(f"{field}: duplicate name {duplicates[0]!r}")
    return tuple(map(str, names))  # np.str_ -> str, so names print and compare plainly


@dataclass(frozen=True, eq=False)
class CostMatrix:
    """Affinities (higher is better) of N named tasks to E named experts; read-only.

    Raises :class:`PlanInputError` unless costs are a non-empty 2-D finite array and the names match its shape
    and are unique non-empty strings: plans are reported and joined with other files by name, so names must
    identify rows and columns.
    """

    costs: np.ndarray  # (N, E) float64
    task_names: tuple[str, ...]
    expert_names: tuple[str, ...]

    def __post_init__(self) -> None:
        costs = np.array(self.costs, dtype=np.float64, copy=True)
        if costs.ndim != 2 or 0 in costs.shape:
            raise PlanInputError(f"costs: expected a non-empty (N, E) matrix, got {costs.shape}")
        tasks = _names(self.task_names, costs.shape[0], "task_names", "rows of costs")
        experts = _names(self.expert_names, costs.shape[1], "expert_names", "columns of costs")
        bad = np.argwhere(~np.isfinite(costs))
        if len(bad):
            i, j = bad[0]
            where = f"task {tasks[i]!r}, expert {experts[j]!r}"
            raise PlanInputError(f"costs: non-finite value {costs[i, j]} at {where}")
        costs.flags.writeable = False
        object.__setattr__(self, "costs", costs)
        object.__setattr__(self, "task_names", tasks)
        object.__setattr__(self, "expert_names", experts)


def _features(array: np.ndarray, field: str, row_names: Sequence[str] = ()) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise PlanInputError(f"{field}: expected a non-empty (rows, D) array, got {array.shape}")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        i, d = bad[0]
        row = f"row {i}" + (f" (task {row_names[i]!r})" if i < len(row_names) else "")
        raise PlanInputError(f"{field}: non-finite value {array[i, d]} at {row}, dimension {d}")
    return array


def expert_anchors(features: np.ndarray, num_experts: int, seed: int) -> np.ndarray:
    """(E, D) k-means++ centres of the (M, D) pool ``features``, sorted lexicographically.

    Sorting (by first coordinate, then the next, ...) keeps expert numbering independent of the order sklearn
    returns centres in. Raises :class:`PlanInputError` if ``num_experts < 1``, the pool is empty, not 2-D or
    not finite, or it has fewer distinct points than experts (k-means would return indistinguishable anchors).
    """
    from sklearn.cluster import KMeans  # lazily: importing sklearn takes ~1.5 s and pulls in pandas, pyarrow

    pool = _features(features, "features")
    if num_experts < 1:
        raise PlanInputError(f"num_experts: must be at least 1, got {num_experts}")
    distinct = len(np.unique(pool, axis=0))
    if distinct < num_experts:
        raise PlanInputError(f"features: {distinct} distinct of M={len(pool)} < {num_experts}")
    kmeans = KMeans(num_experts, init="k-means++", n_init=KMEANS_N_INIT, random_state=seed)
    centres = kmeans.fit(pool).cluster_centers_
    return centres[np.lexsort(centres.T[::-1])]


def cosine_affinity(task_features: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(N, E) cosine of each task feature (N, D) with each anchor (E, D), clipped to [-1, 1].

    Clipped because rounding can push the cosine of parallel vectors just past 1. Raises
    :class:`PlanInputError` for empty or non-finite inputs, different D, or a zero row, whose cosine is
    undefined.
    """
    tasks, centres = _features(task_features, "task_features"), _features(anchors, "anchors")
    if tasks.shape[1] != centres.shape[1]:
        raise PlanInputError(f"anchors: D={centres.shape[1]}, task_features: D={tasks.shape[1]}")
    unit = []
    for field, array in (("task_features", tasks), ("anchors", centres)):
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        if not norms.all():
            raise PlanInputError(f"{field}: row {np.flatnonzero(norms == 0)[0]} has zero norm")
        unit.append(array / norms)
    return np.clip(unit[0] @ unit[1].T, -1.0, 1.0)


def affinity_from_features(
    domain_means: np.ndarray,
    task_names: Sequence[str],
    num_experts: int,
    seed: int,
    anchor_pool: np.ndarray | None = None,
    expert_names: Sequence[str] | None = None,
) -> CostMatrix:
    """GEM costs: cosine of each dataset's (N, D) mean feature with k-means++ anchors.

    Anchors are fitted on ``anchor_pool`` (default: the domain means, so each expert starts at a cluster of
    similar datasets); experts default to ``expert0``, ... Raises :class:`PlanInputError` as
    :func:`expert_anchors`, :func:`cosine_affinity` and :class:`CostMatrix` do, naming the first non-finite
    task.
    """
    task_names = tuple(task_names)
    means = _features(domain_means, "domain_means", task_names)
    pool = means if anchor_pool is None else _features(anchor_pool, "anchor_pool")
    anchors = expert_anchors(pool, num_experts, seed)
    experts = [f"expert{j}" for j in range(num_experts)] if expert_names is None else expert_names
    return CostMatrix(cosine_affinity(means, anchors), task_names, tuple(experts))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(path: Path) -> CostMatrix:
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        rows = [(reader.line_num, row) for row in reader if row]  # blank lines are skipped
    if not rows:
        raise PlanInputError("empty file; expected a header 'task,<expert names>'")
    header, body = rows[0][1], rows[1:]
    if body and all(map(_is_number, header[1:] + [row[0] for _, row in body])):
        raise PlanInputError("has no names: header must name the experts, column 1 the tasks")
    values = []
    for line, row in body:
        if len(row) != len(header):
            raise PlanInputError(f"line {line} (task {row[0]!r}): {len(row)} cells, not {len(header)}")
        for expert, cell in zip(header[1:], row[1:], strict=True):
            if not _is_number(cell):
                where = f"line {line}, task {row[0]!r}, expert {expert!r}"
                raise PlanInputError(f"{where}: {cell!r} is not a number")
            values.append(float(cell))
    costs = np.array(values, dtype=np.float64).reshape(len(body), len(header) - 1)
    return CostMatrix(costs, [row[0] for _, row in body], header[1:])


def _load_parquet(path: Path) -> CostMatrix:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pa.ArrowException as err:  # not only ArrowInvalid (a ValueError): also NotImplemented, TypeError
        raise ValueError(err) from err
    text = [i for i, f in enumerate(table.schema) if f.type in (pa.string(), pa.large_string())]
    if len(text) != 1:
        found = [table.schema[i].name for i in text]
        raise PlanInputError(f"need one string column of task names, found {found or 'none'}")
    experts = [field for i, field in enumerate(table.schema) if i != text[0]]
    for field in experts:
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
            raise PlanInputError(f"column {field.name!r} has type {field.type}, not a number")
    columns = [table.column(field.name).to_numpy() for field in experts]
    costs = np.array(columns, dtype=np.float64).T.reshape(table.num_rows, len(experts))
    return CostMatrix(costs, table.column(text[0]).to_pylist(), [f.name for f in experts])


def _numeric(array: object) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf":
        found = f"{type(array).__name__} of dtype {getattr(array, 'dtype', None)}"
        raise PlanInputError(f"costs: expected a numeric array, got {found}")
    return array


def _load_npz(path: Path) -> CostMatrix:
    if not zipfile.is_zipfile(path):
        raise PlanInputError("is not a zip archive, so not an .npz file")
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in _NPZ_KEYS if key not in archive.files]
        if missing:
            raise PlanInputError(f"missing array {missing[0]!r}; need {_NPZ_KEYS}")
        costs, tasks, experts = (archive[key] for key in _NPZ_KEYS)
    return CostMatrix(_numeric(costs), tasks, experts)  # names: non-str dtypes are refused


def _load_npy(path: Path) -> CostMatrix:
    costs, sidecar = _numeric(np.load(path, allow_pickle=False)), Path(f"{path}.names.json")
    if costs.ndim != 2:  # before the names: a sidecar would not make a 3-D array a cost matrix
        raise PlanInputError(f"costs: expected a 2-D (tasks, experts) array, got shape {costs.shape}")
    if not sidecar.exists():
        raise PlanInputError(
            f"a .npy file has no names; write {sidecar} as "
            '{"tasks": [...], "experts": [...]}, or save as .npz, .csv or .parquet'
        )
    try:
        names = json.loads(sidecar.read_text(encoding="utf-8"))
    except ValueError as err:
        raise PlanInputError(f"{sidecar}: not UTF-8 JSON: {err}") from err
    for key in ("tasks", "experts"):
        if not isinstance(names, dict) or not isinstance(names.get(key), list):
            raise PlanInputError(f"{sidecar}: expected an object with a list {key!r}")
    return CostMatrix(costs, names["tasks"], names["experts"])


_LOADERS = {".csv": _load_csv, ".parquet": _load_parquet, ".npz": _load_npz, ".npy": _load_npy}


def _suffix(path: Path) -> str:
    if path.suffix not in _LOADERS:
        raise PlanInputError(f"{path}: unsupported suffix {path.suffix!r}, use one of {[*_LOADERS]}")
    return path.suffix


def load_cost_matrix(path: str | Path) -> CostMatrix:
    """Read a named cost matrix; the suffix (.csv, .parquet, .npz, .npy) picks the format.

    Raises :class:`PlanInputError` naming ``path`` for an unknown suffix, a file not of its format, a ``.npy``
    array that is not 2-D, missing names (a nameless matrix could silently be matched with the wrong datasets)
    or invalid content (see :class:`CostMatrix`); ``FileNotFoundError`` if there is no such file,
    ``IsADirectoryError`` for a folder, and other ``OSError``s when the file cannot be read.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():  # before the loaders: an absent .npz would read as "not a zip archive"
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    if path.is_dir():  # pyarrow would read a folder as a partitioned dataset
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a cost file", str(path))
    try:
        return _LOADERS[suffix](path)
    except PlanInputError as err:
        raise PlanInputError(f"{path}: {err}") from err
    except (ValueError, csv.Error, zipfile.BadZipFile, EOFError) as err:  # malformed file
        raise PlanInputError(f"{path}: not a readable {suffix} file: {' '.join(str(err).split())}") from err


def _save_csv(matrix: CostMatrix, path: Path) -> None:
    if all(map(_is_number, matrix.expert_names + matrix.task_names)):
        raise PlanInputError(f"{path}: all names look numeric, so it would read back nameless")
    with atomic_path(path) as temp, temp.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow([_TASK_COLUMN, *matrix.expert_names])
        for name, row in zip(matrix.task_names, matrix.costs.tolist(), strict=True):
            writer.writerow([name, *map(repr, row)])  # repr: shortest exact round trip


def _save_parquet(matrix: CostMatrix, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array(matrix.task_names, pa.string()), *matrix.costs.T]
    table = pa.Table.from_arrays(arrays, names=[_TASK_COLUMN, *matrix.expert_names])
    with atomic_path(path) as temp:
        pq.write_table(table, temp)


def _save_npz(matrix: CostMatrix, path: Path) -> None:
    tasks, experts = np.array(matrix.task_names), np.array(matrix.expert_names)  # unicode arrays
    with atomic_path(path) as temp, temp.open("wb") as stream:  # a stream: savez would add ".npz"
        np.savez(stream, costs=matrix.costs, tasks=tasks, experts=experts)


def _save_npy(matrix: CostMatrix, path: Path) -> None:
    names = json.dumps({"tasks": matrix.task_names, "experts": matrix.expert_names}, indent=1)
    with atomic_path(Path(f"{path}.names.json")) as names_temp, atomic_path(path) as temp:
        names_temp.write_text(names, encoding="utf-8")
        with temp.open("wb") as stream:  # a stream: np.save would add ".npy" to the name
            np.save(stream, matrix.costs)


_WRITERS = {".csv": _save_csv, ".parquet": _save_parquet, ".npz": _save_npz, ".npy": _save_npy}


def save_cost_matrix(matrix: CostMatrix, path: str | Path) -> None:
    """Write ``matrix`` in the format its suffix names (``.npy`` adds ``<path>.names.json``).

    Atomic: each file goes to a temp file in the same folder, then is renamed over the target, so readers
    never see half a matrix and a failed save leaves any old file intact. Raises :class:`PlanInputError` for
    an unsupported suffix or, for ``.csv``, names that would all read back as numbers (a nameless matrix).
    """
    path = Path(path)
    _WRITERS[_suffix(path)](matrix, path)
