"""`gemlab report` against damaged, foreign and crafted inputs: one line and exit 2, or a report that stays in --out.

Each refused input ends in ``gemlab report: error: <file>: <what>`` on one
line of stderr, never a traceback, with nothing written anywhere (the whole
temporary tree is compared before and after). Router, strategy, domain and
parameter names are data anyone can write: a report from them succeeds, and
every file it writes has a plain name inside ``--out``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import pandas as pd
import pyarrow.fs as pafs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemlab.cli import main
from gemlab.report.output import safe_name
from gemlab.report.results import NUMBER_COLUMNS, REQUIRED_COLUMNS, TEXT_COLUMNS
from gemlab.storage import Location
from report_rows import run_rows

LOADS = {"big": [1.0, 0.0], "small": [0.0, 1.0]}
UNREACHABLE = "s3://{}b/k?endpoint_override=http://127.0.0.1:9&scheme=http&region=us-east-1"


def valid_rows() -> pd.DataFrame:
    """Two tiny runs (a GEM run with routing and cross-expert rows, a top-k run): a report draws two figures."""
    cross = {"big": [0.9, 0.3], "small": [0.2, 0.6]}
    gem = run_rows("g0", "gem", "gem", 0, [0.9, 0.6], loads=LOADS, cross=cross)
    return pd.DataFrame([*gem, *run_rows("t0", "topk", None, 0, [0.8, 0.4])])


def results(tmp_path: Path, frame: pd.DataFrame, name: str = "results.parquet") -> str:
    path = tmp_path / "runs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    return str(path)


def changed(frame: pd.DataFrame, column: str, values) -> pd.DataFrame:
    """The valid rows with one column replaced (a scalar for every row, or one value per row)."""
    return frame.assign(**{column: values})


def report_of(tmp_path: Path, frame: pd.DataFrame, *options: str) -> list[str]:
    return [results(tmp_path, frame), "--out", str(tmp_path / "out"), *options]


def bytes_file(data: bytes) -> Callable[[Path], list[str]]:
    def build(tmp_path: Path) -> list[str]:
        path = tmp_path / "runs" / "results.parquet"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        return [str(path), "--out", str(tmp_path / "out")]

    return build


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def with_frame(edit: Callable[[pd.DataFrame], pd.DataFrame], *options: str) -> Callable[[Path], list[str]]:
    return lambda tmp_path: report_of(tmp_path, edit(valid_rows()), *options)


def out_is(make: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    """Valid results, and an --out that ``make`` prepares."""
    return lambda tmp_path: [results(tmp_path, valid_rows()), "--out", str(make(tmp_path))]


def existing_file(tmp_path: Path) -> Path:
    (tmp_path / "taken").write_text("a file, not a folder")
    return tmp_path / "taken"


def read_only_folder(tmp_path: Path) -> Path:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0o555)
    return tmp_path / "locked" / "out"


def link_out_of_out(tmp_path: Path) -> Path:
    """An --out whose heatmap file is a symbolic link to a file outside it."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "heatmap-gem.png").symlink_to(tmp_path / "elsewhere.png")
    return tmp_path / "out"


def one_good_one_bad(tmp_path: Path) -> list[str]:
    good = results(tmp_path, valid_rows(), "good.parquet")
    bad = results(tmp_path, changed(valid_rows(), "step", "100"), "bad.parquet")
    return [good, bad, "--out", str(tmp_path / "out")]


def classification_and_detection(tmp_path: Path) -> list[str]:
    """A classification run's file and a detection run's (its task metric ``ap``): one report takes one task."""
    detection = changed(valid_rows(), "metric", valid_rows()["metric"].replace("accuracy", "ap"))
    files = [results(tmp_path, valid_rows(), "cls.parquet"), results(tmp_path, detection, "det.parquet")]
    return [*files, "--out", str(tmp_path / "out")]


def bad_file_in_a_folder(tmp_path: Path) -> list[str]:
    results(tmp_path, valid_rows(), "trial-000/results.parquet")
    (tmp_path / "runs" / "trial-001").mkdir()
    (tmp_path / "runs" / "trial-001" / "results.parquet").write_text("{}")
    return [str(tmp_path / "runs"), "--out", str(tmp_path / "out")]


def folder_without_results(tmp_path: Path) -> list[str]:
    (tmp_path / "runs" / "trial-000").mkdir(parents=True)
    (tmp_path / "runs" / "trial-000" / "run.json").write_text("{}")
    return [str(tmp_path / "runs"), "--out", str(tmp_path / "out")]


def nan_metric(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.head(1).assign(metric="loss", value=float("nan"))], ignore_index=True)


def missing_column(column: str):
    edit = with_frame(lambda f: f.drop(columns=column))
    return pytest.param(edit, f"missing columns [{column!r}]", id=f"without-{column}")


def text_in(column: str):
    """Numbers' column holding text: a value that reads as a number, so the column's type is what is wrong."""
    edit = with_frame(lambda f: changed(f, column, "1"))
    return pytest.param(edit, f"column {column!r} holds '1' where numbers", id=f"text-in-{column}")


def number_in(column: str):
    edit = with_frame(lambda f: changed(f, column, 7))
    return pytest.param(edit, f"column {column!r} holds 7 where text belongs", id=f"number-in-{column}")


def missing_value_in(column: str):
    """One row's value set to null, the rest kept."""
    edit = lambda f: changed(f, column, [None, *f[column].iloc[1:]])  # noqa: E731
    return pytest.param(with_frame(edit), f"column {column!r} has a missing value (row 0)", id=f"gap-in-{column}")


def fraction_in(column: str):
    edit = with_frame(lambda f: changed(f, column, 0.5))
    return pytest.param(edit, f"column {column!r} holds 0.5 where a whole number", id=f"half-{column}")


WHOLE_COLUMNS = [c.name for c in NUMBER_COLUMNS if c.whole]
NAMED_COLUMNS = [c.name for c in TEXT_COLUMNS if not c.missing_allowed]
COUNTED_COLUMNS = [c.name for c in NUMBER_COLUMNS if not c.missing_allowed]

REFUSED = [
    *[missing_column(c) for c in REQUIRED_COLUMNS],
    *[text_in(c.name) for c in NUMBER_COLUMNS],
    *[number_in(c.name) for c in TEXT_COLUMNS],
    *[missing_value_in(c) for c in [*NAMED_COLUMNS, *COUNTED_COLUMNS]],
    *[
        pytest.param(
            with_frame(lambda f, c=c: changed(f, c, 0.5)), f"column {c!r} holds 0.5 where a whole", id=f"half-{c}"
        )
        for c in WHOLE_COLUMNS
    ],
    pytest.param(with_frame(lambda f: changed(f, "value", True)), "column 'value' holds True where numbers", id="bool"),
    pytest.param(with_frame(lambda f: changed(f, "value", float("nan"))), "no finite 'all'-domain", id="all-nan"),
    pytest.param(with_frame(lambda f: changed(f, "value", float("inf"))), "no finite 'all'-domain", id="all-inf"),
    pytest.param(with_frame(lambda f: f[f["metric"] != "accuracy"]), "no finite 'all'-domain", id="no-accuracy"),
    pytest.param(with_frame(lambda f: f.head(0)), "the results hold no rows", id="empty-table"),
    pytest.param(
        with_frame(lambda f: changed(f, "metric", f["metric"].str.replace("expert_load/1", "expert_load/one"))),
        "metric 'expert_load/one' has no expert number",
        id="expert-metric-without-number",
    ),
    pytest.param(
        with_frame(lambda f: changed(f, "metric", f["metric"].str.replace("cross_expert/0", "cross_expert/"))),
        "metric 'cross_expert/' has no expert number",
        id="cross-expert-without-number",
    ),
    pytest.param(with_frame(lambda f: f, "--metric", "nosuch"), "no metric 'nosuch' (--metric)", id="unknown-metric"),
    pytest.param(with_frame(nan_metric, "--metric", "loss"), "metric 'loss' is missing (NaN", id="nan-metric"),
    pytest.param(bytes_file(b"not parquet"), "not a readable results table", id="text-file"),
    pytest.param(bytes_file(b""), "not a readable results table", id="empty-file"),
    pytest.param(bytes_file(parquet_bytes(valid_rows())[:300]), "not a readable results table", id="truncated"),
    pytest.param(bytes_file(parquet_bytes(pd.DataFrame({"x": [1]}))), "missing columns", id="foreign-table"),
    pytest.param(one_good_one_bad, "bad.parquet: column 'step' holds '100'", id="second-file-bad"),
    pytest.param(
        classification_and_detection,
        "cls.parquet: classification runs (accuracy), ",
        id="classification-and-detection",
    ),
    pytest.param(bad_file_in_a_folder, "trial-001/results.parquet: not a readable", id="bad-file-in-folder"),
    pytest.param(folder_without_results, "runs: no results.parquet under this folder", id="folder-without-results"),
    pytest.param(lambda p: [str(p / "nowhere"), "--out", str(p / "out")], "nowhere: no such file", id="absent"),
    pytest.param(lambda p: [UNREACHABLE.format(""), "--out", str(p / "out")], "s3://b/k", id="unreachable-store"),
    pytest.param(
        lambda p: [UNREACHABLE.format("KEY:SECRET@"), "--out", str(p / "out")], "s3://***@b/k", id="unreachable-creds"
    ),
    pytest.param(out_is(existing_file), "taken: exists and is not a folder", id="out-is-a-file"),
    pytest.param(out_is(lambda p: existing_file(p) / "out"), "taken is a file, not a folder", id="out-under-a-file"),
    pytest.param(
        out_is(read_only_folder),
        "cannot write in",
        id="out-read-only",
        marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder"),
    ),
    pytest.param(
        out_is(lambda p: Path("/sys/gemlab-report")),
        "cannot write in /sys",
        id="out-in-sysfs",
        marks=pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sysfs is Linux's"),
    ),
    pytest.param(out_is(link_out_of_out), "heatmap-gem.png: resolves outside the output folder", id="out-link"),
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: a file's digest, a link's target, a folder's mark."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            entries[str(path)] = f"-> {os.readlink(path)}"
        elif path.is_file():
            entries[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            entries[str(path)] = "folder"
    return entries


@pytest.fixture(autouse=True)
def no_s3_retries(monkeypatch):
    """Object stores without retries, so that an unreachable one fails at once.

    pyarrow's URIs take no retry or timeout option; with its defaults a
    closed port takes seconds to be given up on. The message is the same.
    """
    parse = Location.parse

    def without_retries(where):
        location = parse(where)
        if location.is_local:
            return location
        options = {k: v[0] for k, v in parse_qs(location.query.removeprefix("?")).items()}
        retry = pafs.AwsStandardS3RetryStrategy(max_attempts=1)
        return dataclasses.replace(location, filesystem=pafs.S3FileSystem(**options, retry_strategy=retry))

    monkeypatch.setattr(Location, "parse", without_retries)


@pytest.mark.parametrize(("build", "fragment"), REFUSED)
def test_a_bad_input_ends_in_one_line_naming_it_and_writes_nothing(build, fragment, tmp_path, capsys):
    argv = build(tmp_path)
    before = snapshot(tmp_path)
    rc = main(["report", *argv])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gemlab report: error: "), captured.err
    assert fragment in lines[0]
    assert "Traceback" not in captured.out + captured.err and "SECRET" not in captured.err
    assert snapshot(tmp_path) == before


def written(argv: list[str]) -> tuple[int, set[str]]:
    """Run a report on a fresh --out; its exit status and the names of the files it wrote."""
    out = Path(argv[argv.index("--out") + 1])
    rc = main(["report", *argv])
    return rc, {p.name for p in out.iterdir()} if out.is_dir() else set()


def crafted_routers(tmp_path: Path) -> list[str]:
    """Routers named to escape --out, with the folders such names would need already there."""
    names = ["../../evil", "x/../../../evil", "/tmp/gemlab-evil", "a/b", "a_b", ".hidden", "nul\x00", "new\nline"]
    names += ["$\\frac{", "λ-routing", "x" * 300, "p|q,r"]
    out = tmp_path / "deep" / "er" / "out"
    for folder in ("heatmap-x", "heatmap-", "curve-"):
        (out / folder).mkdir(parents=True)
    rows = [row for i, name in enumerate(names) for row in run_rows(f"r{i}", name, None, 0, [0.5, 0.5], loads=LOADS)]
    return [results(tmp_path, pd.DataFrame(rows)), "--out", str(out)]


def test_crafted_router_names_stay_inside_out_and_apart(tmp_path, capsys):
    argv = crafted_routers(tmp_path)
    outside = {k for k in snapshot(tmp_path) if "/out/" not in k}
    rc, files = written(argv)
    assert rc == 0, capsys.readouterr().err
    heatmaps = {f for f in files if f.startswith("heatmap-") and f.endswith(".png")}
    assert len(heatmaps) == 12  # one per router: a/b and a_b, each name's digest, keep them apart
    assert {k for k in snapshot(tmp_path) if "/out/" not in k} == outside
    assert not Path("/tmp/gemlab-evil.png").exists() and not list(Path("/tmp").glob("gemlab-evil*"))
    markdown = (Path(argv[-1]) / "per_domain.md").read_text()
    assert len(markdown.splitlines()) == 4 + 12  # title, blank, header, rule, one line per method
    records = list(csv.reader(io.StringIO((Path(argv[-1]) / "per_domain.csv").read_text())))
    assert all(len(r) == 5 for r in records) and ["p|q,r", "big", "0.5", "0.0", "1"] in records


def odd_values(tmp_path: Path) -> list[str]:
    """Readable results a careless writer might leave: every one still reports."""
    cross = {"big": [0.9, 0.3], "small": [0.2, 0.6]}
    frame = pd.DataFrame(
        [
            *run_rows("g0", "gem", "gem", 0, [0.9, 0.6], loads={"big": [1.0, 0.0]}, cross=cross),  # none for small
            *run_rows("g1", "gem", "gem", 1, [0.8, 0.5]),
            *run_rows("d0", "diverged", None, 0, [float("nan"), float("nan")]),
        ]
    )
    parameters = {"text": ["a", "b", "c"], "flag": [True, False, True], "lists": [[1.0], [2.0], [3.0]]}
    parameters["wide"] = [float("inf"), 1.0, float("-inf")]
    for name, values in parameters.items():
        frame[f"param:{name}"] = frame["run"].map(dict(zip(["g0", "g1", "d0"], values, strict=True)))
    return report_of(tmp_path, frame)


def test_odd_but_readable_results_still_report(tmp_path, capsys):
    rc, files = written(odd_values(tmp_path))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "cross_expert-gem.png" in files  # cross-expert rows without loads for one domain: no box there
    assert not any(f.startswith("curve-") for f in files)  # text, truth values, lists, one finite value: no curve
    assert captured.err == "gemlab report: note: no finite accuracy to select by, left out: 'diverged'\n"


def test_an_expert_numbering_with_gaps_keeps_its_numbers(tmp_path):
    frame = pd.DataFrame(run_rows("g0", "gem", "gem", 0, [0.9, 0.6], loads=LOADS))
    frame["metric"] = frame["metric"].str.replace("expert_load/1", "expert_load/5")
    rc, files = written(report_of(tmp_path, frame))
    assert rc == 0 and "heatmap-gem.png" in files


names = st.text(st.sampled_from("ab./\\\x00\n$_-:λ🙂 "), max_size=12) | st.text(max_size=40)
PLAIN_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+=:-")


@settings(max_examples=300, deadline=None)
@given(names, names)
def test_safe_names_are_plain_file_names_that_keep_texts_apart(first, second):
    for text in (first, second):
        name = safe_name(text)
        assert name and len(name) <= 80 and not name.startswith(".")
        assert set(name) <= PLAIN_CHARACTERS
    assert (safe_name(first) == safe_name(second)) == (first == second)


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # names in scripts DejaVu Sans lacks
@settings(max_examples=6, deadline=None)
@given(st.lists(names, min_size=1, max_size=3, unique=True), names.filter(lambda d: d not in ("all", "big")))
def test_a_report_on_any_router_and_domain_names_stays_inside_out(routers, domain):
    with tempfile.TemporaryDirectory() as folder:
        tmp_path = Path(folder)
        loads = {"big": [1.0, 0.0], domain: [0.0, 1.0]}
        rows = [
            run_rows(f"r{i}", r, None, 0, [0.5, 0.7], loads=loads, domains=["big", domain])
            for i, r in enumerate(routers)
        ]
        argv = report_of(tmp_path, pd.DataFrame([row for run in rows for row in run]))
        rc, files = written(argv)
        assert rc == 0
        assert len({f for f in files if f.startswith("heatmap-")}) == len(routers)
        assert all(set(f) <= PLAIN_CHARACTERS and not f.startswith(".") for f in files)
        assert {p.parent for p in tmp_path.rglob("*") if p.is_file()} == {tmp_path / "runs", tmp_path / "out"}
