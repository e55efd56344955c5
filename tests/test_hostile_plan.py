"""``gemlab plan`` against bad inputs: one line ``gemlab plan: error: <path>: <what>``, exit 2, no traceback,
nothing written -- for every class of bad cost file, loads file, scenario, option and destination."""

import contextlib
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemlab.cli import main
from gemlab.plan import command as plan_command
from gemlab.plan.affinity import CostMatrix, save_cost_matrix

TASKS = ("coco", "voc", "kitti", "dota")
SCENARIO = """num_experts: 2
capacity: 2
seed: 0
feature_dim: 8
style_weight: 1.0
content_weight: 0.6
noise: 0.1
domains:
  - {name: a, style: photo, images: 10, categories: [car]}
  - {name: b, style: art, images: 20, categories: [dog]}
  - {name: c, style: photo, images: 5, categories: [cat]}
"""


def _costs(folder: Path, name: str = "c.csv") -> Path:
    costs = np.array([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.85, 0.2, 0.4], [0.1, 0.7, 0.6]])
    save_cost_matrix(CostMatrix(costs, TASKS, ("e0", "e1", "e2")), folder / name)
    return folder / name


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for folders): what an error must leave unchanged."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _refused(tmp_path: Path, capsys, arguments: list[str], *fragments: str) -> None:
    """``gemlab plan`` exits 2 with one line holding every fragment, no traceback, and nothing written.

    Adds ``--out tmp_path/out/plan.json`` unless ``arguments`` has an ``--out``.
    """
    (tmp_path / "out").mkdir(exist_ok=True)
    if "--out" not in arguments:
        arguments = [*arguments, "--out", str(tmp_path / "out" / "plan.json")]
    before = _tree(tmp_path)
    assert main(["plan", *arguments]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gemlab plan: error: "), captured.err
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in captured.out + captured.err
    assert _tree(tmp_path) == before  # no plan, no temp file, no folder created


def _ids(cases: list) -> list[str]:
    return [getattr(case, "values", case)[0] for case in cases]  # a tuple, or a pytest.param


# --- cost files: (id, file name, content -- None: no file, a folder: {}), what the message says after the path)

COST_FILES = [
    *[
        (f"missing {suffix}", f"c{suffix}", None, "No such file or directory")
        for suffix in (".csv", ".npy", ".npz", ".parquet")
    ],
    ("a folder", "c.csv", {}, "is a folder, not a cost file"),
    ("unsupported suffix", "c.txt", "task,a\nx,1\n", "unsupported suffix '.txt'"),
    ("3-D npy", "c.npy", np.ones((2, 2, 2)), "costs: expected a 2-D (tasks, experts) array, got shape (2, 2, 2)"),
    ("1-D npy", "c.npy", np.ones(2), "costs: expected a 2-D (tasks, experts) array, got shape (2,)"),
    ("npz not a zip", "c.npz", b"PK but no zip", "is not a zip archive"),
    ("truncated parquet", "c.parquet", "truncated", "not a readable .parquet file"),
    ("csv not UTF-8", "c.csv", b"task,a\n\xff\xfe,1\n", "not a readable .csv file"),
    ("csv without names", "c.csv", "0,1\n0.5,0.2\n", "has no names"),
    ("csv NaN cost", "c.csv", "task,a\nx,nan\n", "costs: non-finite value nan"),
    ("csv repeated task", "c.csv", "task,a\nx,1\nx,2\n", "task_names: duplicate name 'x'"),
]


def _input_file(folder: Path, name: str, content) -> Path:
    """``folder/name`` holding ``content``: text or bytes, an array (.npy with names), "truncated" (a cut-off
    cost file of that suffix), {} (a folder) or None (nothing)."""
    path = folder / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
        _write(folder / f"{name}.names.json", json.dumps({"tasks": ["t", "u"], "experts": ["a", "b"]}))
    elif content == "truncated":
        path.write_bytes(_costs(folder, name).read_bytes()[:200])
    elif content == {}:
        path.mkdir()
    elif content is not None:
        _write(path, content)
    return path


@pytest.mark.parametrize(("name", "file", "content", "message"), COST_FILES, ids=_ids(COST_FILES))
def test_bad_input_file(tmp_path, capsys, name, file, content, message):
    path = _input_file(tmp_path, file, content)
    _refused(tmp_path, capsys, [str(path)], f"error: {path}: {message}")


# --- loads files: (id, file name, content, what the message says after the path) ------------------------------------

ALL_ONE = json.dumps(dict.fromkeys(TASKS, 1))
LOADS_FILES = [
    ("truncated JSON", "l.json", '{"coco": 5, "voc"', "not valid JSON: Expecting ':' delimiter"),
    ("JSON list", "l.json", "[1, 2, 3, 4]", "expected a JSON object of task names to loads, got list"),
    ("JSON unknown task", "l.json", ALL_ONE[:-1] + ', "nosuch": 1}', "unknown task(s) ['nosuch']"),
    ("CSV unknown task", "l.csv", "task,load\ncoco,1\nvoc,1\nkitti,1\ndota,1\ncocoo,2\n", "unknown task(s) ['cocoo']"),
    (
        "CSV repeated task",
        "l.csv",
        "task,load\ncoco,1\nvoc,1\nkitti,1\ndota,1\ncoco,2\n",
        "line 6, task 'coco': duplicate",
    ),
    ("JSON repeated task", "l.json", ALL_ONE[:-1] + ', "voc": 9}', "task 'voc': duplicate task"),
    ("a task missing", "l.csv", "task,load\ncoco,1\nvoc,1\n", "no load for task(s) ['kitti', 'dota']"),
    ("not a number", "l.csv", "task,load\ncoco,1\nvoc,lots\n", "line 3, task 'voc': the load 'lots' is not a number"),
    (
        "negative",
        "l.csv",
        "task,load\ncoco,1\nvoc,-2\n",
        "line 3, task 'voc': a load must be a finite number >= 0, got '-2'",
    ),
    (
        "NaN text",
        "l.csv",
        "task,load\ncoco,nan\n",
        "line 2, task 'coco': a load must be a finite number >= 0, got 'nan'",
    ),
    ("NaN JSON", "l.json", '{"coco": NaN}', "task 'coco': a load must be a finite number >= 0, got nan"),
    ("overflow", "l.json", '{"coco": 1e999}', "task 'coco': a load must be a finite number >= 0, got inf"),
    ("huge integer", "l.json", '{"coco": 1' + "0" * 400 + "}", "task 'coco': the load"),
    ("boolean", "l.json", '{"coco": true}', "task 'coco': the load True is not a number"),
    ("object value", "l.json", '{"coco": {"n": 1}}', "task 'coco': the load [('n', 1)] is not a number"),
    ("no header", "l.csv", "coco,1\nvoc,1\nkitti,1\ndota,1\n", "line 1: expected a header"),
    ("three cells", "l.csv", "task,load\ncoco,1,2\n", "line 2: expected 2 cells (task, load), got 3"),
    ("empty", "l.csv", "", "empty file"),
    ("not UTF-8", "l.csv", b"task,load\n\xffcoco,1\n", "not UTF-8 text (byte 10)"),
    ("other suffix", "l.txt", "task,load\n", "unsupported suffix '.txt'"),
    ("a folder", "l.json", {}, "Is a directory"),
]


@pytest.mark.parametrize(("name", "file", "content", "message"), LOADS_FILES, ids=_ids(LOADS_FILES))
def test_bad_loads_file(tmp_path, capsys, name, file, content, message):
    path = _input_file(tmp_path, file, content)
    _refused(tmp_path, capsys, [str(_costs(tmp_path)), "--loads", str(path)], f"error: {path}: {message}")


# --- options: (id, arguments after the cost file, what the message says) ------------------------------------------

OPTIONS = [
    ("loads file missing", ["--loads", "no.json"], "no.json: no such loads file"),
    ("loads keyword typo", ["--loads", "heavy-taild"], "heavy-taild: no such loads file"),
    ("loads scenario alone", ["--loads", "scenario"], "--loads scenario: only valid together with --scenario"),
    ("capacity not integer", ["--capacity", "1.5"], "--capacity: expected integers, got '1.5'"),
    ("capacity empty", ["--capacity", ","], "--capacity: expected integers, got ','"),
    ("capacity count", ["--capacity", "1,2"], "capacity: expected a scalar or 3 values, got shape (2,)"),
    ("capacity zero", ["--capacity", "2,0,2"], "capacity: must be finite and > 0; expert 'e1' has 0"),
    ("capacity negative", ["--capacity", "-2"], "capacity: must be finite and > 0; expert 'e0' has -2"),
    ("capacity too small", ["--capacity", "1"], "capacity: total capacity 3 is smaller than the 4 tasks"),
    ("load capacity text", ["--loads", "heavy-tailed", "--load-capacity", "big"], "--load-capacity: expected a number"),
    (
        "load capacity NaN",
        ["--loads", "heavy-tailed", "--load-capacity", "nanx"],
        "load capacity: must be finite and > 0",
    ),
    ("load capacity alone", ["--load-capacity", "3"], "--load-capacity needs --loads"),
    ("capacity with loads", ["--loads", "heavy-tailed", "--capacity", "2"], "--capacity is for count mode"),
    ("precision 0", ["--precision", "0"], "precision: must be in 1..30, got 0"),
    ("precision 31", ["--precision", "31"], "precision: must be in 1..30, got 31"),
    ("time limit 0", ["--time-limit", "0"], "time_limit: must be > 0 seconds, got 0.0"),
    ("time limit NaN", ["--time-limit", "nan"], "time_limit: must be > 0 seconds, got nan"),
    ("negative seed", ["--seed", "-1"], "seed: must be >= 0, got -1"),
]


@pytest.mark.parametrize(("name", "options", "message"), OPTIONS, ids=_ids(OPTIONS))
def test_bad_option(tmp_path, capsys, monkeypatch, name, options, message):
    monkeypatch.chdir(tmp_path)
    _refused(tmp_path, capsys, [str(_costs(tmp_path)), *options], f"error: {message}")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--synthetic", "4", "2", "--seed", "-1"], "seed: must be >= 0"), (["--synthetic", "0", "3"], "must be >= 1")],
)
def test_bad_synthetic_instance(tmp_path, capsys, arguments, message):
    _refused(tmp_path, capsys, arguments, message)


# --- scenarios: (id, the file's text, what the message says after the path) -----------------------------------------

SCENARIOS = [
    ("not YAML", "num_experts: [2\n", "not valid YAML: expected ',' or ']', but got '<stream end>' (line 2, column 1)"),
    ("not UTF-8", b"num_experts: \xff\n", "not UTF-8 text (byte 13)"),
    ("a list", "- 1\n", "expected a mapping at the top level, got list"),
    ("empty", "", "expected a mapping at the top level, got an empty file"),
    ("impossible date", "seed: 2024-13-01\n", "not valid YAML: month must be in 1..12"),
    ("python tag", "seed: !!python/object:os.system {}\n", "not valid YAML: could not determine a constructor"),
    ("missing field", SCENARIO.replace("noise: 0.1\n", ""), "noise: missing"),
    ("unknown field", SCENARIO + "nosie: 0.2\n", "unknown field(s) ['nosie']"),
    ("wrong type", SCENARIO.replace("experts: 2", "experts: two"), "num_experts: must be an integer >= 1, got 'two'"),
    ("boolean", SCENARIO.replace("seed: 0", "seed: true"), "seed: must be an integer >= 0, got True"),
    ("zero dimensions", SCENARIO.replace("feature_dim: 8", "feature_dim: 0"), "feature_dim: must be an integer >= 1"),
    ("NaN weight", SCENARIO.replace("noise: 0.1", "noise: .nan"), "noise: must be a finite number, got nan"),
    ("no domains", SCENARIO.split("domains:")[0] + "domains: []\n", "domains: must be a non-empty list"),
    ("domain not a mapping", SCENARIO + "  - 7\n", "domains[3]: must be a mapping"),
    ("domain field missing", SCENARIO.replace("images: 20, ", ""), "domains[1].images: missing"),
    ("domain unknown field", SCENARIO.replace("images: 20", "imgs: 20"), "domains[1]: unknown field(s) ['imgs']"),
    ("negative images", SCENARIO.replace("images: 20", "images: -2"), "domains[1].images: must be a finite number"),
    ("no categories", SCENARIO.replace("[dog]", "[]"), "domains[1].categories: must be a non-empty list of names"),
    ("repeated name", SCENARIO.replace("name: c", "name: a"), "domains[2].name: 'a' is also the name of domains[0]"),
    ("too many experts", SCENARIO.replace("num_experts: 2", "num_experts: 5"), "features: 3 distinct of M=3 < 5"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "message"), SCENARIOS, ids=_ids(SCENARIOS))
def test_bad_scenario(tmp_path, capsys, name, text, message):
    path = _write(tmp_path / "s.yaml", text)
    _refused(tmp_path, capsys, ["--scenario", str(path)], f"error: {path}: {message}")


def test_missing_scenario(tmp_path, capsys):
    path = tmp_path / "none.yaml"
    _refused(tmp_path, capsys, ["--scenario", str(path)], f"{path}: no such scenario file", "['uodb12']")


def test_scenario_file_without_the_yaml_suffix(tmp_path, capsys):
    path = _write(tmp_path / "s.txt", SCENARIO)
    _refused(tmp_path, capsys, ["--scenario", str(path)], f"{path}: a scenario file must end in .yaml or .yml")


# --- destinations: (id, --out relative to tmp_path, what the message says after it) ---------------------------------

DESTINATIONS = [
    ("an existing folder", "out", "is a folder; give a file name"),
    ("under a file", "c.csv/plan.json", "{tmp}/c.csv is not a folder"),
    ("deeper under a file", "c.csv/a/b/plan.json", "{tmp}/c.csv is not a folder"),
    pytest.param("in /proc", "/proc/gemlab/plan.json", "cannot write in /proc (No such file or directory)",
                 marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")),
    pytest.param("in a read-only folder", "locked/plan.json", "cannot write in",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "out", "message"), DESTINATIONS, ids=_ids(DESTINATIONS))
def test_bad_destination(tmp_path, capsys, monkeypatch, name, out, message):
    def no_solve(*args, **kwargs):
        raise AssertionError("solved before checking --out")

    monkeypatch.setattr(plan_command, "make_plan", no_solve)  # the destination is checked before the solve
    (tmp_path / "out").mkdir()
    (tmp_path / "locked").mkdir(mode=0o500)
    costs = _costs(tmp_path)
    _refused(
        tmp_path,
        capsys,
        [str(costs), "--out", str(tmp_path / out)],
        f"error: {tmp_path / out}: {message.format(tmp=tmp_path)}",
    )


def test_a_missing_out_folder_is_created_once_the_plan_is_made(tmp_path):
    out = tmp_path / "new" / "deeper" / "plan.json"
    assert main(["plan", str(_costs(tmp_path)), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["task_names"] == list(TASKS)
    assert [p.name for p in out.parent.iterdir()] == ["plan.json"]


def test_good_loads_files_and_a_good_scenario_still_plan(tmp_path, capsys):
    costs = _costs(tmp_path)
    _write(tmp_path / "l.csv", "task,load\ncoco,5\nvoc,2\nkitti,2\ndota,1\n")
    _write(tmp_path / "l.json", '{"dota": 1, "kitti": 2.0, "voc": 2, "coco": 5}')
    for loads in ("l.csv", "l.json"):
        assert main(["plan", str(costs), "--loads", str(tmp_path / loads), "--load-capacity", "5"]) == 0
        assert "capacity violations: none" in capsys.readouterr().out
    path = _write(tmp_path / "s.yaml", SCENARIO)
    assert main(["plan", "--scenario", str(path), "--loads", "scenario", "--load-capacity", "20"]) == 0


# --- any bytes: exit 0 or 2, never an exception ---------------------------------------------------------------------


def _run_quietly(arguments: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(arguments)
    return rc, err.getvalue()


def _check_outcome(rc: int, err: str) -> None:
    assert rc in (0, 2)
    if rc == 2:
        assert len(err.splitlines()) == 1 and err.startswith("gemlab plan: error: "), err


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".npy", ".npz", ".parquet"]))
def test_any_bytes_as_a_input_file(tmp_path, content, suffix):
    path = _write(tmp_path / f"fuzz{suffix}", content)
    _check_outcome(*_run_quietly(["plan", str(path)]))


_CSV_TOKENS = [*"task,load\n01.-e", *TASKS, "nan", "inf", '"', "\r", "\x00", "\u00e9"]
_CSV_TEXT = st.lists(st.sampled_from(_CSV_TOKENS), max_size=40).map("".join)
_JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from([*TASKS, "x"]), inner, max_size=5),
    max_leaves=10,
)


def _loads_run(folder: Path, name: str, content: str) -> tuple[int, str]:
    path = _write(folder / name, content)
    return _run_quietly(["plan", str(_costs(folder)), "--loads", str(path)])


@FUZZ
@given(text=_CSV_TEXT)
def test_any_text_as_a_loads_csv(tmp_path, text):
    _check_outcome(*_loads_run(tmp_path, "l.csv", text))


@FUZZ
@given(value=_JSON_VALUE)
def test_any_json_as_a_loads_file(tmp_path, value):
    _check_outcome(*_loads_run(tmp_path, "l.json", json.dumps(value)))


@FUZZ
@given(text=st.text(max_size=200))
def test_any_text_as_a_scenario(tmp_path, text):
    path = _write(tmp_path / "s.yaml", text)
    _check_outcome(*_run_quietly(["plan", "--scenario", str(path)]))


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["num_experts", "capacity", "seed", "feature_dim", "noise", "domains", "extra"]),
        st.none()
        | st.booleans()
        | st.integers(-3, 4)
        | st.floats(-9, 9)
        | st.sampled_from([math.nan, math.inf])
        | st.text(max_size=3)
        | st.lists(st.integers(), max_size=2),
        max_size=3,
    )
)
def test_any_field_values_in_a_scenario(tmp_path, changes):
    import yaml

    scenario = yaml.safe_load(SCENARIO) | changes
    path = _write(tmp_path / "s.yaml", yaml.safe_dump(scenario))
    _check_outcome(*_run_quietly(["plan", "--scenario", str(path)]))
