"""Run outputs: results.parquet rows, TensorBoard scalars and heatmap, progress lines, the comparison table."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gemlab.engine.config import compose_config
from gemlab.engine.outputs import TensorBoardLog, comparison_table, progress_line, write_results
from gemlab.storage import Location


def record(step: int, accuracy: float) -> dict:
    return {
        "step": step,
        "domains": {
            "rot0": {"accuracy": accuracy, "loss": 0.5, "expert_load": [1.0, 0.0]},
            "invert": {"accuracy": accuracy / 2, "loss": 1.5, "expert_load": [0.25, 0.75]},
        },
        "train": {"loss": 0.7, "aux/balance": 0.01},
        "samples_per_s": 1234.0,
        "cpu_ms_per_sample": 0.9,
        "allreduce_bytes_per_step": 4096,
    }


def test_results_table_has_one_row_per_domain_metric_and_step(tmp_path):
    cfg = compose_config(["experiment=quickstart", "seed=3"])
    path = write_results(Location.parse(tmp_path), cfg, "run-a", [record(50, 0.8), record(100, 0.9)])
    rows = pq.read_table(path.path).to_pylist()
    assert {(r["run"], r["router"], r["strategy"], r["precision"], r["num_experts"], r["seed"]) for r in rows} == {
        ("run-a", "gem", "gem", 8, 4, 3)
    }
    value = {(r["domain"], r["metric"], r["step"]): r["value"] for r in rows}
    assert value["invert", "accuracy", 100] == 0.45 and value["invert", "expert_load/1", 50] == 0.75
    assert value["all", "accuracy", 100] == (0.9 + 0.45) / 2 and value["all", "train/aux/balance", 50] == 0.01
    assert value["all", "allreduce_bytes_per_step", 50] == 4096.0
    assert len(rows) == 2 * (2 * 4 + 6)
    topk = pq.read_table(
        write_results(Location.parse(tmp_path), compose_config(["router=topk"]), "b", [record(1, 0.5)]).path
    )
    assert set(topk.column("strategy").to_pylist()) == {None} and set(topk.column("precision").to_pylist()) == {None}


def test_tensorboard_gets_scalars_per_domain_and_loss_and_the_heatmap(tmp_path):
    log = TensorBoardLog(Location.parse(tmp_path))
    log.add(record(50, 0.8))
    log.add(record(100, 0.9))
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"accuracy/rot0", "accuracy/invert", "accuracy/all", "train/loss/all", "train/aux/balance/all"} <= set(
        tags["scalars"]
    )
    assert [e.value for e in events.Scalars("accuracy/rot0")] == [0.800000011920929, 0.8999999761581421]
    assert tags["images"] == ["routing/expert_load"] and len(events.Images("routing/expert_load")) == 2


def test_progress_line_and_comparison_table():
    line = progress_line("gem", record(50, 0.8), 300)
    assert line.startswith("[gem] step    50/300") and "rot0 0.800" in line and "1,234 samples/s" in line
    table = comparison_table([("gem", record(300, 0.8)), ("topk", record(300, 0.6))])
    assert "| invert | 0.400 | 0.300 |" in table and "| **mean** | 0.600 | 0.450 |" in table


def _uploaded_steps(run_dir: Location) -> list[int]:
    with (run_dir / "tensorboard").local_copy() as folder:
        return [e.step for e in EventAccumulator(str(folder)).Reload().Scalars("accuracy/rot0")]


def test_results_and_tensorboard_events_go_to_an_object_store(s3_uri):
    run_dir = Location.parse(s3_uri) / "run-a"
    path = write_results(run_dir, compose_config(["experiment=quickstart"]), "run-a", [record(50, 0.8)])
    assert path.uri.startswith("s3://") and not path.is_local and "test:test" not in str(path)  # no credentials
    rows = pq.read_table(io.BytesIO(path.read_bytes())).to_pylist()
    assert ("rot0", "accuracy", 0.8) in {(r["domain"], r["metric"], r["value"]) for r in rows}
    log = TensorBoardLog(run_dir)
    log.add(record(50, 0.8))
    assert _uploaded_steps(run_dir) == [50]  # uploaded after every evaluation, not only at the end
    log.add(record(100, 0.9))
    log.close()
    assert _uploaded_steps(run_dir) == [50, 100] and not log.staging.exists()
