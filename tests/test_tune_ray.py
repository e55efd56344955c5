"""`gemlab sweep` on a real local Ray: the smoke sweep's table, ASHA's early stops, restore, the plan cache."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from gemlab.cli import main

pytestmark = pytest.mark.ray


def test_smoke_sweep_runs_stops_weak_trials_and_restores_without_rerunning(ray_session, digits_dir, tmp_path, capsys):
    command = ["sweep", "sweep=smoke", f"data.path={digits_dir}", f"storage_path={tmp_path}"]
    assert main(command) == 0
    first = capsys.readouterr().out
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    table = pq.read_table(sweep_dir / "results.parquet").to_pandas()
    assert sorted(table["trial"].unique()) == ["trial-000", "trial-001", "trial-002", "trial-003"]
    assert sorted(table["param:trainer.lr"].unique()) == [3e-06, 1e-05, 0.003, 0.01]
    # the constructed metric: lr 1e-5 and 3e-6 stay at chance, so ASHA stops them at its first rung
    assert "stopped at 15" in first and "| finished |" in first
    assert len(list((sweep_dir / "plans").iterdir())) == 1  # lr is no planner input: one plan for all trials
    assert all((trial / "tensorboard").is_dir() for trial in (sweep_dir / "trials").iterdir())
    report = tmp_path / "report"
    assert main(["report", str(sweep_dir), "--out", str(report)]) == 0
    written = {p.name for p in report.iterdir()}
    assert {"per_domain.md", "per_domain.tex", "heatmap-gem.png", "curve-trainer.lr.png"} <= written
    checkpoints = {p: p.stat().st_mtime for p in (sweep_dir / "trials").rglob("checkpoint-*")}

    assert main(command) == 0  # the same command: Tune restores the finished sweep
    again = capsys.readouterr().out
    assert "] step " not in again and "| finished |" in again
    assert {p: p.stat().st_mtime for p in (sweep_dir / "trials").rglob("checkpoint-*")} == checkpoints
