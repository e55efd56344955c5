"""`gemlab sweep` on a real local Ray: the smoke sweep's table, ASHA's early stops, restore, the plan cache."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gemlab.cli import main
from gemlab.engine.resume import find_resume_point
from gemlab.storage import Location
from gemlab.tune.command import saved_statuses
from gemlab.tune.sweep import trial_name

pytestmark = pytest.mark.ray


def _interrupt_once_a_trial_checkpoints(trials_root: Path) -> threading.Thread:
    """SIGINT to this process, as Ctrl-C or ``gemlab jobs stop`` would send, once a trial has a checkpoint."""

    def watch() -> None:
        deadline = time.monotonic() + 300
        while not any(trials_root.glob("sweeps/*/trials/*/checkpoint-*")) and time.monotonic() < deadline:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_smoke_sweep_interrupted_resumes_stops_weak_trials_and_restores_without_rerunning(
    ray_session, digits_dir, tmp_path, capsys
):
    command = ["sweep", "sweep=smoke", f"data.path={digits_dir}", f"storage_path={tmp_path}"]
    watcher = _interrupt_once_a_trial_checkpoints(tmp_path)
    assert main(command) == 130  # Tune saved its state and returned
    watcher.join()
    interrupted = capsys.readouterr().out
    assert "| interrupted |" in interrupted and "the same command resumes the sweep" in interrupted
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    unfinished = [trial_name(i) for i, s in saved_statuses(Location.parse(sweep_dir)).items() if s != "TERMINATED"]
    saved = {}
    for trial in unfinished:
        resume = find_resume_point(Location.parse(sweep_dir / "trials" / trial))
        if resume.folder is not None:
            saved[trial] = resume.step
    assert saved  # the interruption came after a checkpoint of a trial it left unfinished
    assert main(command) == 0  # resumed: unfinished trials continue from their checkpoints
    first = capsys.readouterr().out
    for trial, step in saved.items():  # nothing up to a saved step is trained, or reported, twice
        assert f"[{trial}] step {step:>5}/" not in first and f"[{trial}] step {step + 15:>5}/" in first  # interval 15
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
