"""`gemlab train` and `gemlab sweep` on bad input: one line, exit 2, no traceback, nothing left behind.

Every case fails on the driver before Ray starts, so none of them needs a Ray instance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemlab.cli import main
from gemlab.engine.config import ConfigError, compose_config, run_name
from gemlab.engine.prepare import RUN_FILE, prepare, read_run_record, with_absolute_paths
from gemlab.storage import Location
from helpers import tiny_overrides

CLOSED_PORT_S3 = "s3://gemlab/runs?endpoint_override=http://127.0.0.1:9&scheme=http&region=us-east-1"


def _collection(tmp: Path, text: str) -> str:
    folder = tmp / "collection"
    folder.mkdir()
    (folder / "gemlab-data.yaml").write_text(text)
    return f"data.path={folder}"


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


# (id, overrides built from tmp_path, fragment of the one error line)
TRAIN_CASES = [
    ("unknown key", lambda t: ["moe.bogus=1"], "moe.bogus"),
    ("unknown experiment", lambda t: ["experiment=nosuch"], "experiment/nosuch"),
    ("zero workers", lambda t: ["trainer.num_workers=0"], "trainer.num_workers"),
    ("no collection", lambda t: ["data.source=collection", f"data.path={t / 'nosuch'}"], "no gemlab-data.yaml"),
    (
        "collection not YAML",
        lambda t: ["data.source=collection", _collection(t, "domains: [\n")],
        "gemlab-data.yaml: not valid YAML",
    ),
    ("collection a list", lambda t: ["data.source=collection", _collection(t, "- a\n")], "gemlab-data.yaml"),
    ("storage a file", lambda t: [f"storage_path={_file(t, 'blocker', b'')}"], "storage_path: cannot write to"),
    ("storage under /proc", lambda t: ["storage_path=/proc/gemlab/runs"], "storage_path: cannot write to /proc"),
    ("storage scheme", lambda t: ["storage_path=bogus://x/runs"], "storage_path: bogus://x/runs"),
    ("storage unreachable", lambda t: [f"storage_path='{CLOSED_PORT_S3}'"], "storage_path: cannot write to s3://"),
    ("backbone missing", lambda t: [f"affinity.backbone={t / 'nosuch.pt'}"], "affinity.backbone="),
    (
        "backbone garbage",
        lambda t: [f"affinity.backbone={_file(t, 'garbage.pt', b'garbage')}"],
        "is not a loadable weights file",
    ),
    (
        "backbone empty",
        lambda t: [f"affinity.backbone={_file(t, 'empty.pt', b'')}"],
        "is not a loadable weights file",
    ),
]


def _one_error_line(capsys, command: str) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gemlab {command}: error: "), err
    return lines[0]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(("name", "build", "fragment"), TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_gemlab_train_refuses_bad_input_in_one_line(digits_dir, tmp_path, capsys, name, build, fragment):
    runs = tmp_path / "runs"
    overrides = tiny_overrides(digits_dir, runs, *build(tmp_path))
    before = _tree(tmp_path)
    assert main(["train", *overrides]) == 2
    assert fragment in _one_error_line(capsys, "train")
    assert _tree(tmp_path) == before  # no run folder, no run record, no temp file


def test_a_storage_path_is_checked_before_the_data_are_read(tmp_path, capsys):
    """The destination fails first: the data path does not even exist."""
    blocker = _file(tmp_path, "blocker", b"")
    assert main(["train", "experiment=tiny", f"data.path={tmp_path / 'nosuch'}", f"storage_path={blocker}"]) == 2
    assert "storage_path: cannot write to" in _one_error_line(capsys, "train")


RECORDS = [
    ("not JSON", b'{"identity', "not valid JSON"),
    ("not UTF-8", b"\xff\xfe", "not valid JSON"),
    ("a list", b"[]", "expected an object with ['identity', 'identity_digest', 'plan_fingerprint']"),
    ("no digest", b'{"identity": {}, "plan_fingerprint": null}', "expected an object"),
    ("wrong types", b'{"identity": 3, "identity_digest": "x", "plan_fingerprint": null}', "a field has the wrong type"),
]


@pytest.mark.parametrize(("name", "content", "fragment"), RECORDS, ids=[r[0] for r in RECORDS])
def test_a_damaged_run_record_is_named_and_left_as_it_is(digits_dir, tmp_path, capsys, name, content, fragment):
    overrides = tiny_overrides(digits_dir, tmp_path)
    record = tmp_path / run_name(with_absolute_paths(compose_config(overrides))) / RUN_FILE
    record.parent.mkdir()
    record.write_bytes(content)
    assert main(["train", *overrides]) == 2
    line = _one_error_line(capsys, "train")
    assert line.startswith(f"gemlab train: error: {record}: {fragment}") and "train under another name" in line
    assert record.read_bytes() == content and _tree(record.parent) == [RUN_FILE]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.recursive(st.none() | st.text(max_size=4) | st.integers(), st.lists)))
def test_any_run_record_is_read_or_refused_with_its_name(tmp_path_factory, content):
    file = tmp_path_factory.mktemp("record") / RUN_FILE
    file.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    try:
        record = read_run_record(Location.parse(file))
    except ConfigError as error:
        assert str(error).startswith(f"{file}: ")
    else:
        assert isinstance(record["identity"], dict)


SWEEP_CASES = [
    ("unknown sweep", ["sweep=nosuch"], "sweep/nosuch"),
    ("no sweep", [], "sweep"),
    ("storage a file", ["sweep=smoke", "storage_path={blocker}"], "storage_path"),
]


@pytest.mark.parametrize(("name", "overrides", "fragment"), SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_gemlab_sweep_refuses_bad_input_in_one_line(digits_dir, tmp_path, capsys, name, overrides, fragment):
    blocker = _file(tmp_path, "blocker", b"")
    given_overrides = [o.format(blocker=blocker) for o in overrides]
    before = _tree(tmp_path)
    assert main(["sweep", f"data.path={digits_dir}", f"storage_path={tmp_path / 'runs'}", *given_overrides]) == 2
    assert fragment in _one_error_line(capsys, "sweep")
    assert _tree(tmp_path) == before


def test_prepare_leaves_no_run_folder_when_the_data_are_bad(tmp_path):
    with pytest.raises(ConfigError, match=r"no gemlab-data\.yaml"):
        prepare(compose_config(["data.source=collection", f"data.path={tmp_path / 'x'}", f"storage_path={tmp_path}"]))
    assert _tree(tmp_path) == []
