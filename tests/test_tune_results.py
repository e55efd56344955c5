"""A sweep's results read back from its trials' checkpoints, with the configs of the folder it was composed from.

No Ray: each trial's folder holds a checkpoint that verifies, written here
file by file, as the trainer would have left it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gemlab.engine.api import DEFAULT_CONFIG_DIR
from gemlab.engine.checkpoint import HISTORY_FILE, META_FILE, SHARED_FILE, expert_file
from gemlab.results_schema import COLUMNS, arrow_schema
from gemlab.storage import Location
from gemlab.tune.results import collect_results
from gemlab.tune.sweep import trial_name
from helpers import evaluation_record

TRIALS = [{"trainer.lr": 0.01}, {"trainer.lr": 0.003}]
# A sweep that only the copied folder has, changing a key every results row shows.
ELSEWHERE = """# @package _global_
defaults:
  - override /experiment: tiny
tag: elsewhere
sweep:
  space:
    trainer.lr: [0.01, 0.003]
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The repository's experiments folder, copied, with a sweep of its own."""
    folder = tmp_path / "experiments"
    shutil.copytree(DEFAULT_CONFIG_DIR, folder)
    (folder / "sweep" / "elsewhere.yaml").write_text(ELSEWHERE)
    return folder


def save_checkpoint(run_dir: Path, history: list[dict], num_experts: int) -> None:
    """A checkpoint folder that verifies: every file the meta names, with its size and SHA-256."""
    folder = run_dir / f"checkpoint-{history[-1]['step']:07d}"
    folder.mkdir(parents=True)
    (folder / HISTORY_FILE).write_text(json.dumps(history))
    for name in [SHARED_FILE, *(expert_file(e) for e in range(num_experts))]:
        (folder / name).write_bytes(f"weights of {name}".encode())
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in folder.iterdir()
    }
    (folder / META_FILE).write_text(
        json.dumps({"step": history[-1]["step"], "num_experts": num_experts, "files": files})
    )


def base_overrides(digits_dir: Path, storage: Path) -> list[str]:
    return ["sweep=elsewhere", "router=topk", f"data.path={digits_dir}", f"storage_path={storage}"]


def test_trials_are_read_back_with_the_configs_of_the_sweeps_folder(config_dir, digits_dir, tmp_path):
    sweep_dir = tmp_path / "runs" / "sweeps" / "sweep-elsewhere"
    save_checkpoint(sweep_dir / "trials" / trial_name(0), [evaluation_record(3, 0.6), evaluation_record(6, 0.8)], 2)
    base = base_overrides(digits_dir, tmp_path / "runs")
    path, rows = collect_results(Location.parse(sweep_dir), TRIALS, base, str(config_dir), "accuracy")
    table = pq.read_table(path.path)
    assert table.column_names == [*(c.name for c in COLUMNS), "sweep", "trial", "param:trainer.lr"]
    assert set(table.column("tag").to_pylist()) == {"elsewhere"}  # the copied folder's config, not the repo's
    assert set(table.column("trial").to_pylist()) == {"trial-000"}  # trial 1 has no checkpoint yet
    assert rows == [{"trial": "trial-000", "params": TRIALS[0], "step": 6, "value": pytest.approx(0.6)}]
    assert (sweep_dir / "trials" / "trial-000" / "tensorboard").is_dir()


def test_a_sweep_with_no_results_yet_writes_an_empty_table_without_the_default_configs(
    config_dir, digits_dir, tmp_path
):
    sweep_dir = tmp_path / "runs" / "sweeps" / "sweep-elsewhere"
    base = base_overrides(digits_dir, tmp_path / "runs")  # sweep=elsewhere: absent from the repository's folder
    path, rows = collect_results(Location.parse(sweep_dir), TRIALS, base, str(config_dir), "accuracy")
    assert rows == [] and pq.read_table(path.path).schema.equals(arrow_schema())


def test_the_sweep_modules_and_the_engine_entry_point_load_neither_torch_nor_ray():
    """The sweep's driver imports these before ``ensure_ray``, which must be the first to import Ray."""
    code = "import sys, gemlab.tune.results; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
