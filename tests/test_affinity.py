"""Tests for gemlab.plan.affinity: anchors, cosine costs, and cost-matrix files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gemlab import files
from gemlab.plan import affinity
from gemlab.plan.affinity import (
    CostMatrix,
    affinity_from_features,
    cosine_affinity,
    expert_anchors,
    load_cost_matrix,
    save_cost_matrix,
)
from gemlab.plan.errors import PlanInputError

FORMATS = (".csv", ".parquet", ".npz", ".npy")
# Floats that a careless text format would not round-trip exactly.
TRICKY = np.array([[0.1, -0.0, 5e-324], [1.7976931348623157e308, math.pi, -1 / 3]])


def tricky_matrix() -> CostMatrix:
    return CostMatrix(TRICKY, ("a,b", 'say "hi"'), (" spaced ", "naïve\nline", "3"))


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float64).view(np.uint64)


def assert_same(loaded: CostMatrix, expected: CostMatrix) -> None:
    np.testing.assert_array_equal(bits(loaded.costs), bits(expected.costs))
    assert loaded.task_names == expected.task_names
    assert loaded.expert_names == expected.expert_names


def clusters(seed: int, per_cluster: int = 5, num_clusters: int = 4, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Points around scaled basis vectors (pairwise orthogonal centres), and each point's cluster."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_clusters), per_cluster)
    return 10.0 * np.eye(dim)[labels] + 0.1 * rng.standard_normal((len(labels), dim)), labels


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---- anchors and cosine affinity -------------------------------------------------------------


def test_anchors_are_deterministic_sorted_and_shaped() -> None:
    pool, _ = clusters(0, per_cluster=20)
    anchors = expert_anchors(pool, num_experts=4, seed=7)
    assert anchors.shape == (4, 8)
    np.testing.assert_array_equal(anchors, expert_anchors(pool.copy(), num_experts=4, seed=7))
    assert [tuple(row) for row in anchors] == sorted(tuple(row) for row in anchors)


def test_anchors_need_enough_distinct_points() -> None:
    with pytest.raises(PlanInputError, match=r"2 distinct of M=3 < 3"):
        expert_anchors(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), num_experts=3, seed=0)
    with pytest.raises(PlanInputError, match="num_experts"):
        expert_anchors(np.eye(2), num_experts=0, seed=0)
    with pytest.raises(PlanInputError, match=r"features: non-finite value nan at row 1, dimension 0"):
        expert_anchors(np.array([[1.0, 0.0], [np.nan, 1.0]]), num_experts=1, seed=0)


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 5), st.just(3)), elements=st.floats(-10, 10)),
    arrays(np.float64, st.tuples(st.integers(1, 4), st.just(3)), elements=st.floats(-10, 10)),
)
def test_cosine_matches_a_per_pair_transcription(tasks: np.ndarray, anchors: np.ndarray) -> None:
    assume((np.linalg.norm(tasks, axis=1) > 1e-3).all() and (np.linalg.norm(anchors, axis=1) > 1e-3).all())
    got = cosine_affinity(tasks, anchors)
    assert got.shape == (len(tasks), len(anchors))
    for i, t in enumerate(tasks.tolist()):
        for j, a in enumerate(anchors.tolist()):
            dot = sum(x * y for x, y in zip(t, a, strict=True))
            expected = dot / (math.sqrt(sum(x * x for x in t)) * math.sqrt(sum(y * y for y in a)))
            assert got[i, j] == pytest.approx(expected, abs=1e-12)
            assert -1.0 <= got[i, j] <= 1.0


def test_cosine_rejects_zero_rows_and_mismatched_dimensions() -> None:
    with pytest.raises(PlanInputError, match="anchors: row 1 has zero norm"):
        cosine_affinity(np.ones((2, 3)), np.array([[1.0, 0, 0], [0, 0, 0]]))
    with pytest.raises(PlanInputError, match="anchors: D=2, task_features: D=3"):
        cosine_affinity(np.ones((2, 3)), np.ones((2, 2)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("use_pool", [False, True])
def test_well_separated_domains_pick_their_own_cluster(seed: int, use_pool: bool) -> None:
    means, labels = clusters(seed)
    pool = clusters(seed + 100, per_cluster=30)[0] if use_pool else None
    names = [f"domain{i}" for i in range(len(means))]
    matrix = affinity_from_features(means, names, num_experts=4, seed=seed, anchor_pool=pool)
    anchors = expert_anchors(means if pool is None else pool, 4, seed)
    own_anchor = np.argmax(anchors, axis=1)  # the basis direction each anchor sits on
    best = matrix.costs.argmax(axis=1)
    np.testing.assert_array_equal(own_anchor[best], labels)
    assert (matrix.costs.max(axis=1) > 0.99).all()


def test_affinity_from_features_defaults_and_determinism() -> None:
    means, _ = clusters(3)
    names = [f"d{i}" for i in range(len(means))]
    matrix = affinity_from_features(means, names, num_experts=4, seed=5)
    assert matrix.expert_names == ("expert0", "expert1", "expert2", "expert3")
    assert matrix.task_names == tuple(names)
    assert not matrix.costs.flags.writeable
    assert (np.abs(matrix.costs) <= 1.0).all()
    again = affinity_from_features(means, names, num_experts=4, seed=5)
    np.testing.assert_array_equal(bits(matrix.costs), bits(again.costs))


def test_affinity_from_features_rejects_bad_inputs() -> None:
    means = np.eye(3)
    with pytest.raises(PlanInputError, match=r"row 1 \(task 'b'\), dimension 2"):
        affinity_from_features(np.array([[1.0, 0, 0], [0, 1, np.inf]]), ["a", "b"], 1, seed=0)
    with pytest.raises(PlanInputError, match="task_names: 2 names for 3 rows"):
        affinity_from_features(means, ["a", "b"], 2, seed=0)
    with pytest.raises(PlanInputError, match="expert_names: 1 names for 2 columns"):
        affinity_from_features(means, ["a", "b", "c"], 2, seed=0, expert_names=["x"])
    with pytest.raises(PlanInputError, match="anchors: D=2, task_features: D=3"):
        affinity_from_features(means, ["a", "b", "c"], 2, seed=0, anchor_pool=np.eye(2))
    with pytest.raises(PlanInputError, match="anchor_pool: non-finite value nan at row 0, dimension 1"):
        affinity_from_features(means, ["a", "b", "c"], 1, seed=0, anchor_pool=[[0.0, np.nan, 0.0]])
    with pytest.raises(PlanInputError, match="task_features: row 0 has zero norm"):
        affinity_from_features(np.array([[0.0, 0], [1, 0], [0, 1]]), ["a", "b", "c"], 2, seed=0)


# ---- CostMatrix validation ---------------------------------------------------------------------


def test_cost_matrix_copies_and_freezes() -> None:
    costs = np.array([[1, 2]])
    matrix = CostMatrix(costs, ["t"], np.array(["a", "b"]))
    costs[0, 0] = 9
    assert matrix.costs.dtype == np.float64 and matrix.costs[0, 0] == 1.0
    assert matrix.task_names == ("t",) and type(matrix.expert_names[0]) is str
    with pytest.raises(ValueError, match="read-only"):
        matrix.costs[0, 0] = 3.0


@pytest.mark.parametrize(
    ("costs", "tasks", "experts", "message"),
    [
        (np.zeros(2), ["t"], ["a", "b"], r"non-empty \(N, E\) matrix, got \(2,\)"),
        (np.zeros((0, 2)), [], ["a", "b"], r"got \(0, 2\)"),
        (np.zeros((1, 0)), ["t"], [], r"got \(1, 0\)"),
        ([[0.0, np.inf]], ["t"], ["a", "b"], "non-finite value inf at task 't', expert 'b'"),
        ([[0.0], [np.nan]], ["t", "u"], ["a"], "non-finite value nan at task 'u', expert 'a'"),
        ([[0.0, 1.0]], ["t"], ["a", "a"], "expert_names: duplicate name 'a'"),
        ([[0.0], [1.0]], ["t", "t"], ["a"], "task_names: duplicate name 't'"),
        ([[0.0, 1.0]], [""], ["a", "b"], "task_names: names must be non-empty strings, got ''"),
        ([[0.0, 1.0]], ["t"], ["a", 3], "expert_names: names must be non-empty strings, got 3"),
        ([[0.0, 1.0]], ["t"], ["a"], "expert_names: 1 names for 2 columns"),
    ],
)
def test_cost_matrix_rejects(costs, tasks, experts, message: str) -> None:
    with pytest.raises(PlanInputError, match=message):
        CostMatrix(np.asarray(costs, dtype=float), tasks, experts)


# ---- files: round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"costs{suffix}"
    save_cost_matrix(tricky_matrix(), path)
    assert_same(load_cost_matrix(path), tricky_matrix())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name] + ([f"{path.name}.names.json"] if suffix == ".npy" else [])
    )


@settings(max_examples=25, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.integers(1, 4)),
        elements=st.floats(allow_nan=False, allow_infinity=False),
    ),
    st.sampled_from(FORMATS),
)
def test_round_trip_of_any_finite_floats(costs: np.ndarray, suffix: str) -> None:
    matrix = CostMatrix(costs, [f"t{i}" for i in range(len(costs))], [f"e{j}" for j in range(costs.shape[1])])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, f"m{suffix}")
        save_cost_matrix(matrix, path)
        assert_same(load_cost_matrix(path), matrix)


def test_csv_written_by_hand_loads(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", "dataset,e0,e1\n\nvoc,1,0.5\ncoco , -2 ,3e-1\n")
    matrix = load_cost_matrix(str(path))
    assert matrix.task_names == ("voc", "coco ") and matrix.expert_names == ("e0", "e1")
    np.testing.assert_array_equal(matrix.costs, [[1.0, 0.5], [-2.0, 0.3]])


def test_parquet_names_column_may_be_anywhere_and_integers_are_costs(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"e0": [1, 2], "e1": [0.5, 0.25], "name": ["x", "y"]}), path)
    matrix = load_cost_matrix(path)
    assert matrix.task_names == ("x", "y") and matrix.expert_names == ("e0", "e1")
    np.testing.assert_array_equal(matrix.costs, [[1.0, 0.5], [2.0, 0.25]])


# ---- files: bad inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "c.csv: empty file"),
        ("\n\n", "c.csv: empty file"),
        ("0,1,2\n3,4,5\n", "c.csv: has no names"),
        ("task,a,b\nx,1\n", r"line 2 \(task 'x'\): 2 cells, not 3"),
        ("task,a,b\nx,1,2\ny,1,2,3\n", r"line 3 \(task 'y'\): 4 cells, not 3"),
        ("task,a,b\nx,1,oops\n", "line 2, task 'x', expert 'b': 'oops' is not a number"),
        ("task,a,b\nx,1,\n", "line 2, task 'x', expert 'b': '' is not a number"),
        ("task,a,b\nx,1,nan\n", "non-finite value nan at task 'x', expert 'b'"),
        ("task,a,a\nx,1,2\n", "duplicate name 'a'"),
        ("task,a\nx,1\nx,2\n", "duplicate name 'x'"),
        ("task,a,b\n", r"got \(0, 2\)"),
        ("task\nx\n", r"got \(1, 0\)"),
        ('task,a\n"x,1\n', "c.csv: "),  # unterminated quote: csv.Error or a ragged row
    ],
)
def test_bad_csv(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PlanInputError, match=message) as caught:
        load_cost_matrix(write_csv(tmp_path / "c.csv", text))
    assert str(tmp_path / "c.csv") in str(caught.value)


def test_csv_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_bytes(b"task,\xff\nx,1\n")
    with pytest.raises(PlanInputError, match=r"c\.csv: not a readable \.csv file"):
        load_cost_matrix(tmp_path / "c.csv")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"a": [1.0], "b": [2.0]}), "found none"),
        (pa.table({"t": ["x"], "u": ["y"], "a": [1.0]}), r"found \['t', 'u'\]"),
        (pa.table({"t": ["x"], "a": [True]}), "column 'a' has type bool, not a number"),
        (pa.table({"t": ["x"]}), r"got \(1, 0\)"),
        (pa.table({"t": ["x", None], "a": [1.0, 2.0]}), "names must be non-empty strings, got None"),
        (pa.table({"t": ["x", "y"], "a": [1.0, None]}), "non-finite value nan at task 'y', expert 'a'"),
    ],
)
def test_bad_parquet(tmp_path: Path, table: pa.Table, message: str) -> None:
    pq.write_table(table, tmp_path / "c.parquet")
    with pytest.raises(PlanInputError, match=message) as caught:
        load_cost_matrix(tmp_path / "c.parquet")
    assert str(tmp_path / "c.parquet") in str(caught.value)


def test_parquet_without_a_string_column_says_names_are_missing(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1.0]}), tmp_path / "c.parquet")
    with pytest.raises(PlanInputError, match="string column of task names"):
        load_cost_matrix(tmp_path / "c.parquet")


@pytest.mark.parametrize("missing", ["costs", "tasks", "experts"])
def test_npz_missing_array_is_named(tmp_path: Path, missing: str) -> None:
    arrays = {"costs": np.ones((1, 1)), "tasks": np.array(["t"]), "experts": np.array(["e"])}
    del arrays[missing]
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(PlanInputError, match=f"c.npz: missing array '{missing}'"):
        load_cost_matrix(tmp_path / "c.npz")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"tasks": np.array([b"t"])}, r"task_names: names must be non-empty strings, got np.bytes_\(b't'\)"),
        ({"costs": np.array([["1"]])}, "costs: expected a numeric array, got ndarray of dtype <U1"),
        ({"experts": np.array(["e", "f"])}, "expert_names: 2 names for 1 columns"),
        ({"tasks": np.array(["t", ""])}, "task_names: 2 names for 1 rows"),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(
        tmp_path / "c.npz", **{"costs": np.ones((1, 1)), "tasks": np.array(["t"]), "experts": np.array(["e"])} | arrays
    )
    with pytest.raises(PlanInputError, match=message):
        load_cost_matrix(tmp_path / "c.npz")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a zip", "c.npz: is not a zip archive"),
        (b"PK\x03\x04 truncated", "c.npz: "),
    ],
)
def test_npz_that_is_not_an_archive(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "c.npz").write_bytes(content)
    with pytest.raises(PlanInputError, match=message):
        load_cost_matrix(tmp_path / "c.npz")


def test_npy_without_sidecar_says_how_to_name_it(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.ones((2, 2)))
    with pytest.raises(PlanInputError, match=r"c\.npy: a \.npy file has no names") as caught:
        load_cost_matrix(tmp_path / "c.npy")
    assert "c.npy.names.json" in str(caught.value) and '"tasks"' in str(caught.value)


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ("{not json", r"c.npy.names.json: not UTF-8 JSON"),
        ('["t"]', r"c.npy.names.json: expected an object with a list 'tasks'"),
        ('{"tasks": ["t", "u"]}', r"c.npy.names.json: expected an object with a list 'experts'"),
        ('{"tasks": ["t", "u"], "experts": "ab"}', r"expected an object with a list 'experts'"),
        ('{"tasks": ["t"], "experts": ["a", "b"]}', "task_names: 1 names for 2 rows"),
        ('{"tasks": ["t", "u"], "experts": ["a", null]}', "expert_names: names must be non-empty strings, got None"),
    ],
)
def test_bad_npy_sidecar(tmp_path: Path, sidecar: str, message: str) -> None:
    np.save(tmp_path / "c.npy", np.ones((2, 2)))
    (tmp_path / "c.npy.names.json").write_text(sidecar, encoding="utf-8")
    with pytest.raises(PlanInputError, match=message):
        load_cost_matrix(tmp_path / "c.npy")


def test_npy_with_non_numeric_costs(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.array([[True]]))
    (tmp_path / "c.npy.names.json").write_text('{"tasks": ["t"], "experts": ["e"]}', encoding="utf-8")
    with pytest.raises(PlanInputError, match=r"c\.npy: costs: expected a numeric array, got ndarray of dtype bool"):
        load_cost_matrix(tmp_path / "c.npy")


def test_unsupported_suffix_is_named(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("task,a\nx,1\n")
    with pytest.raises(PlanInputError, match=r"c.txt: unsupported suffix '.txt'"):
        load_cost_matrix(tmp_path / "c.txt")


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_cost_matrix(tmp_path / "absent.csv")


# ---- atomic saves ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c.txt", "c", "c.CSV"])
def test_save_to_unsupported_suffix_writes_nothing(tmp_path: Path, name: str) -> None:
    with pytest.raises(PlanInputError, match="unsupported suffix"):
        save_cost_matrix(tricky_matrix(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_csv_refuses_names_that_would_read_back_as_numbers(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match=r"c\.csv: all names look numeric"):
        save_cost_matrix(CostMatrix(np.ones((1, 1)), ["1"], ["2.5"]), tmp_path / "c.csv")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", FORMATS)
def test_failed_save_keeps_the_old_file(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"c{suffix}"
    old = CostMatrix([[1.0, 2.0]], ["old"], ["a", "b"])
    save_cost_matrix(old, path)
    before = sorted(tmp_path.iterdir())

    def failing_replace(source: str, target: str) -> None:
        raise OSError(f"disk full while replacing {target}")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_cost_matrix(tricky_matrix(), path)
    monkeypatch.undo()
    assert sorted(tmp_path.iterdir()) == before  # no temp files left behind
    assert_same(load_cost_matrix(path), old)


def test_save_failing_mid_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.npy"
    old = CostMatrix([[1.0, 2.0]], ["old"], ["a", "b"])
    save_cost_matrix(old, path)

    def half_save(stream, array) -> None:
        stream.write(b"\x93NUMPY partial")
        raise OSError("crashed mid-write")

    monkeypatch.setattr(affinity.np, "save", half_save)
    with pytest.raises(OSError, match="mid-write"):
        save_cost_matrix(tricky_matrix(), path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy", "c.npy.names.json"]
    assert_same(load_cost_matrix(path), old)


def test_saved_files_get_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        for suffix in FORMATS:
            save_cost_matrix(tricky_matrix(), tmp_path / f"c{suffix}")
    finally:
        os.umask(umask)
    assert {path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == {0o644}


def test_save_creates_no_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        save_cost_matrix(tricky_matrix(), tmp_path / "missing" / "c.csv")
    assert list(tmp_path.iterdir()) == []


def test_saved_bytes_are_deterministic(tmp_path: Path) -> None:
    for suffix in (".csv", ".npy"):  # not .npz: its zip entries carry the time of writing
        save_cost_matrix(tricky_matrix(), tmp_path / f"a{suffix}")
        save_cost_matrix(tricky_matrix(), tmp_path / f"b{suffix}")
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    sidecar = json.loads((tmp_path / "a.npy.names.json").read_text(encoding="utf-8"))
    assert sidecar == {"tasks": ["a,b", 'say "hi"'], "experts": [" spaced ", "naïve\nline", "3"]}


def test_importing_the_module_stays_light() -> None:
    code = "import sys, gemlab.plan.affinity; print(sorted({'torch', 'ray', 'pyarrow', 'sklearn'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert result.stdout.strip() == "[]"
