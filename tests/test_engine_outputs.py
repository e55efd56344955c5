"""Run outputs: results.parquet rows, TensorBoard scalars and heatmap, progress lines, the comparison table."""

from __future__ import annotations

import io
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gemlab.engine.config import compose_config
from gemlab.engine.outputs import TensorBoardLog, comparison_table, progress_line, write_results
from gemlab.report.results import load_results, selected
from gemlab.results_schema import ACCURACY, COLUMNS, CROSS_EXPERT, EXPERT_LOAD, RESULTS_FILE, arrow_schema
from gemlab.storage import Location
from helpers import evaluation_record


def test_results_table_has_one_row_per_domain_metric_and_step(tmp_path):
    cfg = compose_config(["experiment=quickstart", "seed=3"])
    history = [evaluation_record(50, 0.8), evaluation_record(100, 0.9)]
    path = write_results(Location.parse(tmp_path), cfg, "run-a", history)
    rows = pq.read_table(path.path).to_pylist()
    assert {(r["run"], r["router"], r["strategy"], r["precision"], r["num_experts"], r["seed"]) for r in rows} == {
        ("run-a", "gem", "gem", 8, 4, 3)
    }
    value = {(r["domain"], r["metric"], r["step"]): r["value"] for r in rows}
    assert value["invert", "accuracy", 100] == 0.45 and value["invert", "expert_load/1", 50] == 0.75
    assert value["all", "accuracy", 100] == (0.9 + 0.45) / 2 and value["all", "train/aux/balance", 50] == 0.01
    assert value["all", "allreduce_bytes_per_step", 50] == 4096.0 and value["all", "loss", 50] == 1.0
    assert value["all", "worst_group_accuracy", 100] == 0.45  # the lowest domain accuracy
    # per step: each domain's accuracy, loss and two expert loads; all-domain accuracy, loss, worst-group accuracy,
    # 2 train losses, 3 speeds
    assert len(rows) == 2 * (2 * 4 + 8)
    topk = pq.read_table(
        write_results(Location.parse(tmp_path), compose_config(["router=topk"]), "b", [evaluation_record(1, 0.5)]).path
    )
    assert set(topk.column("strategy").to_pylist()) == {None} and set(topk.column("precision").to_pylist()) == {None}


def test_the_written_table_is_the_schema_and_reads_back_as_the_report_reads(tmp_path):
    cfg = compose_config(["experiment=quickstart"])
    record = {**evaluation_record(100, 0.9), "cross_expert": {"rot0": [0.9, 0.2], "invert": [0.1, 0.45]}}
    path = write_results(Location.parse(tmp_path), cfg, "run-a", [evaluation_record(50, 0.8), record])
    assert path.name == RESULTS_FILE
    table = pq.read_table(path.path)
    assert table.schema.equals(arrow_schema()) and table.column_names == [c.name for c in COLUMNS]
    frame = load_results([tmp_path])  # found under the folder by its file name, every column checked
    assert set(frame["metric"]) >= {ACCURACY, f"{EXPERT_LOAD}/1", f"{CROSS_EXPERT}/1", "train/loss"}
    assert selected(frame)["run"].unique().tolist() == ["run-a"]


def test_tune_gets_every_run_level_metric_and_the_held_out_domains_mean():
    """A sweep may rank by worst-group accuracy or held-out accuracy: the flat metrics carry them."""
    from gemlab.engine.loop import flat_metrics

    record = {**evaluation_record(100, 0.8), "heldout": ["invert"]}
    metrics = flat_metrics(record)
    assert metrics["accuracy"] == pytest.approx(0.6) and metrics["accuracy/invert"] == pytest.approx(0.4)
    assert metrics["worst_group_accuracy"] == pytest.approx(0.4)
    assert metrics["loss"] == pytest.approx(1.0)  # the mean of the domains' evaluation loss
    assert metrics["heldout_accuracy"] == pytest.approx(0.4)
    assert metrics["train/loss"] == 0.7 and metrics["step"] == 100
    assert "heldout_accuracy" not in flat_metrics(evaluation_record(100, 0.8))


def test_the_schema_loads_neither_torch_nor_ray_nor_pyarrow():
    code = "import sys, gemlab.results_schema; print(sorted({'torch', 'ray', 'pyarrow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_tensorboard_gets_scalars_per_domain_and_loss_and_the_heatmap(tmp_path):
    log = TensorBoardLog(Location.parse(tmp_path))
    log.add(evaluation_record(50, 0.8))
    log.add(evaluation_record(100, 0.9))
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"accuracy/rot0", "accuracy/invert", "accuracy/all", "train/loss/all", "train/aux/balance/all"} <= set(
        tags["scalars"]
    )
    assert [e.value for e in events.Scalars("accuracy/rot0")] == [0.800000011920929, 0.8999999761581421]
    assert tags["images"] == ["routing/expert_load"] and len(events.Images("routing/expert_load")) == 2


def test_progress_line_and_comparison_table():
    line = progress_line("gem", evaluation_record(50, 0.8), 300)
    assert line.startswith("[gem] step    50/300") and "rot0 0.800" in line and "1,234 samples/s" in line
    table = comparison_table([("gem", evaluation_record(300, 0.8)), ("topk", evaluation_record(300, 0.6))])
    assert "| invert | 0.400 | 0.300 |" in table and "| **mean** | 0.600 | 0.450 |" in table


def _uploaded_steps(run_dir: Location) -> list[int]:
    with (run_dir / "tensorboard").local_copy() as folder:
        return [e.step for e in EventAccumulator(str(folder)).Reload().Scalars("accuracy/rot0")]


def test_results_and_tensorboard_events_go_to_an_object_store(s3_uri):
    run_dir = Location.parse(s3_uri) / "run-a"
    path = write_results(run_dir, compose_config(["experiment=quickstart"]), "run-a", [evaluation_record(50, 0.8)])
    assert path.uri.startswith("s3://") and not path.is_local and "test:test" not in str(path)  # no credentials
    rows = pq.read_table(io.BytesIO(path.read_bytes())).to_pylist()
    assert ("rot0", "accuracy", 0.8) in {(r["domain"], r["metric"], r["value"]) for r in rows}
    log = TensorBoardLog(run_dir)
    log.add(evaluation_record(50, 0.8))
    assert _uploaded_steps(run_dir) == [50]  # uploaded after every evaluation, not only at the end
    log.add(evaluation_record(100, 0.9))
    log.close()
    assert _uploaded_steps(run_dir) == [50, 100] and not log.staging.exists()
