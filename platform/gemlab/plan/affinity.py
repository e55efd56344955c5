"""Affinity (cost) matrices: computed from features, or read from and written to files.

GEM scores dataset i against expert j by ``c_ij = cos(mean feature of i, anchor j)``,
where the anchors are k-means++ centres of a feature pool. The planner only sees
the resulting (N, E) matrix, so this module is the one place where such a matrix
enters the system: every path (features, .csv, .parquet, .npz, .npy) ends in
:class:`CostMatrix`, which validates once, so the solvers never meet NaNs, shape
mismatches or ambiguous names. Floats round-trip bit-for-bit through every format
(the CSV uses Python's shortest round-trip ``repr``), so a saved matrix reproduces
the same plan.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from gemlab.plan.errors import PlanInputError

# k-means++ restarts; fixed so that the anchors depend only on (features, E, seed).
KMEANS_N_INIT = 10
_TASK_COLUMN = "task"  # label cell of the CSV header and name of the parquet names column


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
    return tuple(str(name) for name in names)  # np.str_ -> str, so names compare and print plainly


@dataclass(frozen=True, eq=False)
class CostMatrix:
    """Affinities of N named tasks to E named experts (higher is better), validated and read-only.

    Raises :class:`PlanInputError` on construction if the matrix is not a non-empty
    2-D array of finite numbers, or if the names do not match its shape, are
    empty, not strings or not unique: names are how plans are reported and joined
    with other files, so they must identify rows and columns unambiguously.
    """

    costs: np.ndarray  # (N, E) float64
    task_names: tuple[str, ...]
    expert_names: tuple[str, ...]

    def __post_init__(self) -> None:
        costs = np.array(self.costs, dtype=np.float64, copy=True)
        if costs.ndim != 2 or 0 in costs.shape:
            raise PlanInputError(f"costs: expected a non-empty (tasks, experts) matrix, got shape {costs.shape}")
        tasks = _names(self.task_names, costs.shape[0], "task_names", "rows of costs")
        experts = _names(self.expert_names, costs.shape[1], "expert_names", "columns of costs")
        bad = np.argwhere(~np.isfinite(costs))
        if len(bad):
            i, j = bad[0]
            raise PlanInputError(
                f"costs: {len(bad)} non-finite entries; first at task {tasks[i]!r}, "
                f"expert {experts[j]!r} ({costs[i, j]})"
            )
        costs.flags.writeable = False
        object.__setattr__(self, "costs", costs)
        object.__setattr__(self, "task_names", tasks)
        object.__setattr__(self, "expert_names", experts)


def _features(array: np.ndarray, field: str, row_names: Sequence[str] = ()) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise PlanInputError(f"{field}: expected a non-empty (rows, dims) array, got {array.shape}")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        i, d = bad[0]
        row = f"row {i}" + (f" (task {row_names[i]!r})" if i < len(row_names) else "")
        raise PlanInputError(f"{field}: non-finite value {array[i, d]} at {row}, dimension {d}")
    return array


def expert_anchors(features: np.ndarray, num_experts: int, seed: int) -> np.ndarray:
    """(E, D) k-means++ centres of the (M, D) feature pool, sorted lexicographically.

    Sorting (first coordinate, then the next, ...) makes expert j the same centre
    whatever order sklearn happens to return them in. Raises :class:`PlanInputError`
    if ``num_experts < 1``, the pool is not a finite non-empty 2-D array, or it has
    fewer distinct points than experts (k-means would return duplicate anchors,
    i.e. experts no dataset could tell apart).
    """
    pool = _features(features, "features")
    if num_experts < 1:
        raise PlanInputError(f"num_experts: must be at least 1, got {num_experts}")
    distinct = len(np.unique(pool, axis=0))
    if distinct < num_experts:
        raise PlanInputError(f"features: {distinct} distinct points (of M={len(pool)}) for {num_experts} experts")
    kmeans = KMeans(num_experts, init="k-means++", n_init=KMEANS_N_INIT, random_state=seed)
    centres = kmeans.fit(pool).cluster_centers_
    return centres[np.lexsort(centres.T[::-1])]


def _unit_rows(array: np.ndarray, field: str) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    zero = np.flatnonzero(norms == 0)
    if len(zero):
        raise PlanInputError(f"{field}: row {zero[0]} is the zero vector, its cosine is undefined")
    return array / norms


def cosine_affinity(task_features: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(N, E) cosine similarity of each task feature (N, D) with each anchor (E, D), in [-1, 1].

    Clipped to [-1, 1] because rounding can push a cosine of parallel vectors just
    past 1. Raises :class:`PlanInputError` for non-finite or empty inputs, differing
    dimensions D, or a zero row (the cosine is undefined).
    """
    tasks, centres = _features(task_features, "task_features"), _features(anchors, "anchors")
    if tasks.shape[1] != centres.shape[1]:
        raise PlanInputError(f"anchors: dimension {centres.shape[1]} differs from task_features' {tasks.shape[1]}")
    cosines = _unit_rows(tasks, "task_features") @ _unit_rows(centres, "anchors").T
    return np.clip(cosines, -1.0, 1.0)


def affinity_from_features(
    domain_means: np.ndarray,
    task_names: Sequence[str],
    num_experts: int,
    seed: int,
    anchor_pool: np.ndarray | None = None,
    expert_names: Sequence[str] | None = None,
) -> CostMatrix:
    """GEM costs: cosine of each dataset's (N, D) mean feature with k-means++ anchors.

    The anchors are fitted on ``anchor_pool`` (default: the domain means, so that
    each expert starts at a cluster of similar datasets); expert names default to
    ``expert0``, ``expert1``, ... Raises :class:`PlanInputError` for non-finite or
    mis-shaped features, bad names, or too few distinct pool points (see
    :func:`expert_anchors`).
    """
    task_names = tuple(task_names)
    means = _features(domain_means, "domain_means", task_names)
    pool = means if anchor_pool is None else _features(anchor_pool, "anchor_pool")
    if pool.shape[1] != means.shape[1]:
        raise PlanInputError(f"anchor_pool: dimension {pool.shape[1]} differs from domain_means' {means.shape[1]}")
    anchors = expert_anchors(pool, num_experts, seed)
    if expert_names is None:
        expert_names = [f"expert{j}" for j in range(num_experts)]
    return CostMatrix(cosine_affinity(means, anchors), task_names, tuple(expert_names))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_nameless(expert_cells: Iterable[str], first_column: Iterable[str]) -> bool:
    """A CSV whose header and first column are all numbers is a bare matrix without names."""
    return all(map(_is_number, expert_cells)) and all(map(_is_number, first_column))


def _load_csv(path: Path) -> CostMatrix:
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        rows = [(reader.line_num, row) for row in reader if row]  # blank lines are skipped
    if not rows:
        raise PlanInputError("empty file; expected a header row 'task,<expert names...>'")
    header, body = rows[0][1], rows[1:]
    experts = header[1:]
    if body and _looks_nameless(experts, (row[0] for _, row in body)):
        raise PlanInputError("has no names: the header must name the experts and the first column the tasks")
    values = []
    for line, row in body:
        if len(row) != len(header):
            raise PlanInputError(f"line {line} (task {row[0]!r}) has {len(row)} cells, the header {len(header)}")
        for expert, cell in zip(experts, row[1:], strict=True):
            if not _is_number(cell):
                raise PlanInputError(f"line {line}, task {row[0]!r}, expert {expert!r}: {cell!r} is not a number")
            values.append(float(cell))
    costs = np.array(values, dtype=np.float64).reshape(len(body), len(experts))
    return CostMatrix(costs, tuple(row[0] for _, row in body), tuple(experts))


def _load_parquet(path: Path) -> CostMatrix:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    kinds = [field.type for field in table.schema]
    text = [i for i, kind in enumerate(kinds) if pa.types.is_string(kind) or pa.types.is_large_string(kind)]
    if not text:
        raise PlanInputError("has no string column: the task names are missing")
    if len(text) > 1:
        found = [table.schema[i].name for i in text]
        raise PlanInputError(f"string columns {found}: expected exactly one, the task names")
    numeric = [i for i in range(table.num_columns) if i != text[0]]
    for i in numeric:
        if not (pa.types.is_integer(kinds[i]) or pa.types.is_floating(kinds[i])):
            raise PlanInputError(f"column {table.schema[i].name!r} has type {kinds[i]}, not numeric")
    if not numeric:
        raise PlanInputError("no numeric expert columns")
    columns = [table.column(i).to_numpy().astype(np.float64) for i in numeric]
    names = [table.schema[i].name for i in numeric]
    return CostMatrix(np.stack(columns, axis=1), table.column(text[0]).to_pylist(), names)


def _numeric_array(array: object, key: str) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf":
        dtype = getattr(array, "dtype", None)
        raise PlanInputError(f"{key}: expected a numeric array, got {type(array).__name__} {dtype}")
    return array


def _load_npz(path: Path) -> CostMatrix:
    archive = np.load(path, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise PlanInputError("holds a single array, not an .npz archive of costs, tasks, experts")
    with archive:
        for key in ("costs", "tasks", "experts"):
            if key not in archive.files:
                raise PlanInputError(f"missing array {key!r} (has {archive.files})")
        names = {}
        for key in ("tasks", "experts"):
            names[key] = archive[key]
            if names[key].dtype.kind != "U" or names[key].ndim != 1:
                found = f"dtype {names[key].dtype}, shape {names[key].shape}"
                raise PlanInputError(f"{key}: expected a 1-D unicode array, got {found}")
        return CostMatrix(_numeric_array(archive["costs"], "costs"), names["tasks"], names["experts"])


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".names.json")


def _load_npy(path: Path) -> CostMatrix:
    costs = _numeric_array(np.load(path, allow_pickle=False), "costs")
    sidecar = _sidecar(path)
    if not sidecar.exists():
        raise PlanInputError(
            f"a .npy file holds no names; write them to {sidecar} as "
            '{"tasks": [...], "experts": [...]}, or use .csv, .parquet or .npz'
        )
    try:
        names = json.loads(sidecar.read_text(encoding="utf-8"))
    except ValueError as err:
        raise PlanInputError(f"{sidecar}: not valid UTF-8 JSON: {err}") from err
    for key in ("tasks", "experts"):
        if not isinstance(names, dict) or not isinstance(names.get(key), list):
            raise PlanInputError(f"{sidecar}: expected an object with a list {key!r}")
    return CostMatrix(costs, names["tasks"], names["experts"])


_LOADERS = {".csv": _load_csv, ".parquet": _load_parquet, ".npz": _load_npz, ".npy": _load_npy}


def load_cost_matrix(path: str | Path) -> CostMatrix:
    """Read a named cost matrix; the suffix (.csv, .parquet, .npz, .npy) picks the format.

    Raises :class:`PlanInputError`, with ``path`` in the message, for an unknown
    suffix, a file that is not of its format, missing names (a nameless matrix
    could silently be joined with the wrong datasets) or any invalid content (see
    :class:`CostMatrix`); ``FileNotFoundError`` if the file does not exist.
    """
    path = Path(path)
    if path.suffix not in _LOADERS:
        raise PlanInputError(f"{path}: unsupported suffix {path.suffix!r}; use one of {[*_LOADERS]}")
    try:
        return _LOADERS[path.suffix](path)
    except PlanInputError as err:
        raise PlanInputError(f"{path}: {err}") from err
    except (ValueError, csv.Error, zipfile.BadZipFile, EOFError) as err:  # malformed file
        raise PlanInputError(f"{path}: not a readable {path.suffix} file: {err}") from err


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` that replaces it on success and is removed on any error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _save_csv(matrix: CostMatrix, path: Path) -> None:
    if _looks_nameless(matrix.expert_names, matrix.task_names):
        raise PlanInputError(
            f"{path}: all task and expert names look numeric, so the CSV would read back "
            "as a matrix without names; rename them or use .parquet, .npz or .npy"
        )
    with _atomic(path) as temp, temp.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow([_TASK_COLUMN, *matrix.expert_names])
        for name, row in zip(matrix.task_names, matrix.costs.tolist(), strict=True):
            writer.writerow([name, *map(repr, row)])  # repr: shortest exact round trip


def _save_parquet(matrix: CostMatrix, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array(matrix.task_names, pa.string()), *matrix.costs.T]
    table = pa.Table.from_arrays(arrays, names=[_TASK_COLUMN, *matrix.expert_names])
    with _atomic(path) as temp:
        pq.write_table(table, temp)


def _save_npz(matrix: CostMatrix, path: Path) -> None:
    with _atomic(path) as temp, temp.open("wb") as stream:  # a stream: savez would add ".npz"
        tasks, experts = (np.array(names, dtype=str) for names in (matrix.task_names, matrix.expert_names))
        np.savez(stream, costs=matrix.costs, tasks=tasks, experts=experts)


def _save_npy(matrix: CostMatrix, path: Path) -> None:
    names = {"tasks": list(matrix.task_names), "experts": list(matrix.expert_names)}
    with _atomic(_sidecar(path)) as names_temp, _atomic(path) as temp:
        names_temp.write_text(json.dumps(names, ensure_ascii=False, indent=1), encoding="utf-8")
        with temp.open("wb") as stream:  # a stream: np.save would add ".npy" to the temp name
            np.save(stream, matrix.costs)


_WRITERS = {".csv": _save_csv, ".parquet": _save_parquet, ".npz": _save_npz, ".npy": _save_npy}


def save_cost_matrix(matrix: CostMatrix, path: str | Path) -> None:
    """Write ``matrix`` in the format of the suffix of ``path``, atomically.

    Each file is written to a temp file in the same folder and renamed over the
    target, so a reader (or a crash) never sees half a matrix and a failed save
    leaves any existing file untouched. ``.npy`` also writes the names to
    ``<path>.names.json``. Raises :class:`PlanInputError` for an unsupported suffix
    or, for ``.csv``, names that would read back as a nameless matrix.
    """
    path = Path(path)
    if path.suffix not in _WRITERS:
        raise PlanInputError(f"{path}: unsupported suffix {path.suffix!r}; use one of {[*_WRITERS]}")
    _WRITERS[path.suffix](matrix, path)
