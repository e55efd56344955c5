"""Runs and sweeps stored in an object store: an S3 endpoint on 127.0.0.1, spoken to over the real protocol.

Ray Train writes the checkpoints there itself; gemlab writes and reads the run record, the plan, the results,
the TensorBoard events and a sweep's plan cache there, and nothing lands on the local disk.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gemlab.cli import main
from gemlab.engine.resume import find_resume_point
from gemlab.storage import Location

pytestmark = pytest.mark.ray


def _table(location: Location):
    return pq.read_table(io.BytesIO(location.read_bytes())).to_pandas()


def test_a_run_in_an_object_store_resumes_there_on_another_worker_count(
    ray_session, digits_dir, s3_uri, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # anything written to a local folder by mistake would land here
    command = ["train", "experiment=tiny", f"data.path={digits_dir}", f"storage_path='{s3_uri}'"]
    assert main([*command, "trainer.max_steps=3"]) == 0
    assert main([*command, "trainer.max_steps=6", "trainer.num_workers=1"]) == 0
    out = capsys.readouterr().out
    assert "3 steps, from scratch" in out and "6 steps, continuing from step 3" in out
    assert "test:test" not in out  # credentials in the URI are never printed
    (run_dir,) = Location.parse(s3_uri).folders("tiny-gem-")
    assert {"run.json", "plan.json", "results.parquet", "tensorboard"} <= {p.name for p in _children(run_dir)}
    resume = find_resume_point(run_dir)
    step, checkpoint = resume.step, resume.folder
    assert step == 6 and {"shared.pt", "expert-0000.pt", "expert-0001.pt"} <= {p.name for p in _children(checkpoint)}
    assert json.loads((checkpoint / "meta.json").read_text())["step"] == 6
    table = _table(run_dir / "results.parquet")
    assert sorted(table.loc[table["metric"] == "accuracy", "step"].unique()) == [3, 6]
    assert {"cross_expert/0", "cross_expert/1"} <= set(table["metric"])  # the checkpoint was read back from S3
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_in_an_object_store_writes_its_table_and_restores(ray_session, digits_dir, s3_uri, tmp_path, capsys):
    command = [
        "sweep",
        "sweep=smoke",
        "sweep.space={trainer.lr: [0.01, 0.003]}",
        "sweep.scheduler={name: fifo}",
        "trainer.max_steps=6",
        "trainer.eval_interval=3",
        f"data.path={digits_dir}",
        f"storage_path='{s3_uri}'",
    ]
    assert main(command) == 0
    (sweep_dir,) = (Location.parse(s3_uri) / "sweeps").folders()
    table = _table(sweep_dir / "results.parquet")
    assert sorted(table["trial"].unique()) == ["trial-000", "trial-001"]
    assert len(_children(sweep_dir / "plans")) == 1
    report = tmp_path / "report"
    assert main(["report", (sweep_dir / "results.parquet").uri, "--out", str(report)]) == 0
    assert (report / "per_domain.md").is_file()
    capsys.readouterr()
    assert main(command) == 0  # restored from the bucket: no trial trains again
    assert "] step " not in capsys.readouterr().out


def _children(location: Location) -> list[Path]:
    """Names directly under a location, as paths (for their ``name``)."""
    import pyarrow.fs as pafs

    infos = location.filesystem.get_file_info(pafs.FileSelector(location.path))
    return [Path(info.path) for info in infos]
