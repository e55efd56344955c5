"""Locations: one interface over a local folder and an object store (an S3 endpoint on 127.0.0.1)."""

from __future__ import annotations

import pytest

from gemlab.storage import Location, StorageError


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> Location:
    return Location.parse(tmp_path) if request.param == "local" else Location.parse(request.getfixturevalue("s3_uri"))


def test_files_written_read_listed_and_copied_alike(root, tmp_path):
    run = root / "run-a"
    assert not run.exists() and run.folders() == []
    (run / "checkpoint-0000002" / "meta.json").write_text('{"step": 2}')
    (run / "checkpoint-0000001" / "meta.json").write_text('{"step": 1}')
    (run / "run.json").write_bytes(b"{}")
    (run / "run.json").write_text('{"again": true}')  # replaced whole
    assert (run / "run.json").read_text() == '{"again": true}' and (run / "run.json").is_file()
    assert [f.name for f in run.folders("checkpoint-")] == ["checkpoint-0000001", "checkpoint-0000002"]
    assert [f.path for f in run.files_named("meta.json")] == [
        f"{run.path}/checkpoint-0000001/meta.json",
        f"{run.path}/checkpoint-0000002/meta.json",
    ]
    with (run / "checkpoint-0000002").local_copy() as folder:
        assert (folder / "meta.json").read_text() == '{"step": 2}'
    local = tmp_path / "staged"
    local.mkdir(exist_ok=True)
    (local / "events.1").write_text("e")
    (run / "tensorboard").upload(local)
    assert (run / "tensorboard" / "events.1").read_text() == "e"
    assert (run / "tensorboard").parent.uri == run.uri
    (run / "tensorboard").delete()
    assert not (run / "tensorboard").exists()


def test_a_local_write_leaves_no_temporary_file_behind(tmp_path):
    folder = Location.parse(tmp_path)
    (folder / "a.json").write_text("1")
    with pytest.raises(TypeError):
        (folder / "a.json").write_bytes(None)  # fails mid-write: the old file stays, no temp file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"] and (folder / "a.json").read_text() == "1"


def test_uris_keep_their_options_and_hide_their_credentials():
    location = Location.parse("s3://key:secret@bucket/runs?endpoint_override=http://127.0.0.1:9&region=us-east-1")
    child = location / "tiny-gem-1234"
    assert child.path == "bucket/runs/tiny-gem-1234" and child.name == "tiny-gem-1234" and not child.is_local
    assert (
        child.uri == "s3://key:secret@bucket/runs/tiny-gem-1234?endpoint_override=http://127.0.0.1:9&region=us-east-1"
    )
    assert "secret" not in str(child) and str(child).startswith("s3://***@bucket/runs/tiny-gem-1234?")
    with pytest.raises(StorageError, match="not on a local or shared filesystem"):
        _ = child.local_path
    assert Location.parse("file:///tmp/runs").local_path.as_posix() == "/tmp/runs"
    gcs = Location.parse("gs://bucket/runs?scheme=http&endpoint_override=127.0.0.1:9") / "run-a"
    assert (gcs.path, gcs.uri) == (
        "bucket/runs/run-a",
        "gs://bucket/runs/run-a?scheme=http&endpoint_override=127.0.0.1:9",
    )
    with pytest.raises(StorageError, match="gs://bucket/runs\\?anonymous=1: not a location pyarrow can open"):
        Location.parse("gs://bucket/runs?anonymous=1")  # pyarrow's own complaint follows, naming the option
    with pytest.raises(StorageError, match="bogus://bucket/runs: not a location pyarrow can open"):
        Location.parse("bogus://bucket/runs")
