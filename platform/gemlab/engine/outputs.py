"""What a run leaves behind and prints: progress lines, TensorBoard events, ``results.parquet``, a summary.

``results.parquet`` is long-form -- one row per run x domain x metric x step,
with the config's key fields as columns -- so that a sweep's or several
runs' tables concatenate, and reports are group-bys over one schema. Its
file name, columns and metric names are :mod:`gemlab.results_schema`'s.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gemlab.engine.model import needs_plan
from gemlab.results_schema import (
    ACCURACY,
    ALL_DOMAINS,
    ALLREDUCE_BYTES_PER_STEP,
    CPU_MS_PER_SAMPLE,
    CROSS_EXPERT,
    EXPERT_LOAD,
    LOSS,
    RESULTS_FILE,
    SAMPLES_PER_S,
    arrow_schema,
    expert_metric,
    train_metric,
)
from gemlab.storage import Location

TENSORBOARD_DIR = "tensorboard"


def key_fields(cfg: DictConfig, name: str) -> dict[str, Any]:
    """The config's identifying columns; planner fields only for routers that use a plan."""
    planned = needs_plan(cfg)
    return {
        "run": name,
        "tag": cfg.tag,
        "router": cfg.router.name,
        "strategy": cfg.plan.strategy if planned else None,
        "precision": cfg.plan.precision if planned and cfg.plan.strategy == "gem" else None,
        "num_experts": cfg.moe.num_experts,
        "seed": cfg.seed,
    }


def record_metrics(record: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(domain, metric, value) triples of one evaluation record; raises KeyError for a record without a field."""
    rows = []
    for domain, result in record["domains"].items():
        rows += [(domain, ACCURACY, result["accuracy"]), (domain, LOSS, result["loss"])]
        rows += [(domain, expert_metric(EXPERT_LOAD, j), share) for j, share in enumerate(result["expert_load"])]
    for domain, accuracies in record.get("cross_expert", {}).items():
        rows += [(domain, expert_metric(CROSS_EXPERT, j), value) for j, value in enumerate(accuracies)]
    accuracies = [r["accuracy"] for r in record["domains"].values()]
    rows.append((ALL_DOMAINS, ACCURACY, sum(accuracies) / len(accuracies)))
    rows += [(ALL_DOMAINS, train_metric(key), value) for key, value in record["train"].items()]
    rows.append((ALL_DOMAINS, SAMPLES_PER_S, record["samples_per_s"]))
    rows.append((ALL_DOMAINS, CPU_MS_PER_SAMPLE, record["cpu_ms_per_sample"]))
    rows.append((ALL_DOMAINS, ALLREDUCE_BYTES_PER_STEP, float(record["allreduce_bytes_per_step"])))
    return rows


def results_table(cfg: DictConfig, name: str, history: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None):
    """The long-form table of one run's history; ``extra`` adds constant columns (a sweep's trial and params)."""
    import pyarrow as pa

    fields = key_fields(cfg, name)
    rows = [
        {**fields, "domain": domain, "metric": metric, "step": record["step"], "value": float(value)}
        for record in history
        for domain, metric, value in record_metrics(record)
    ]
    table = pa.Table.from_pylist(rows, schema=arrow_schema())
    for column, value in (extra or {}).items():
        table = table.append_column(column, pa.array([value] * len(table)))
    return table


def write_table(table, path: Location) -> Location:
    """Write a results table as Parquet, whole or not at all."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def write_results(run_dir: Location, cfg: DictConfig, name: str, history: Sequence[dict[str, Any]]) -> Location:
    """``results.parquet`` of the whole history."""
    return write_table(results_table(cfg, name, history), run_dir / RESULTS_FILE)


class TensorBoardLog:
    """Scalars per domain and per loss, and the routing heatmap as an image, for each evaluation.

    Event files are appended to as a run goes on, which an object store cannot do: for a run stored
    there, events are written to a local folder and the folder is uploaded after every evaluation.
    """

    def __init__(self, run_dir: Location) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.target = run_dir / TENSORBOARD_DIR
        self.staging = None if self.target.is_local else Path(tempfile.mkdtemp(prefix="gemlab-tensorboard-"))
        self.writer = SummaryWriter(str(self.staging or self.target.local_path))

    def add(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for domain, metric, value in record_metrics(record):
            if not metric.startswith(f"{EXPERT_LOAD}/"):
                self.writer.add_scalar(f"{metric}/{domain}", value, step)
        self.writer.add_figure("routing/expert_load", routing_heatmap(record), step)
        self.writer.flush()
        if self.staging is not None:
            self.target.upload(self.staging)

    def close(self) -> None:
        self.writer.close()
        if self.staging is not None:
            self.target.upload(self.staging)
            shutil.rmtree(self.staging, ignore_errors=True)


def routing_heatmap(record: dict[str, Any]):
    """Domain x expert share of routed tokens, as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    domains = list(record["domains"])
    loads = np.array([record["domains"][d]["expert_load"] for d in domains])
    figure, axes = plt.subplots(figsize=(1.2 + 0.6 * loads.shape[1], 1.0 + 0.4 * len(domains)))
    image = axes.imshow(loads, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes.set_xticks(range(loads.shape[1]), [str(j) for j in range(loads.shape[1])])
    axes.set_yticks(range(len(domains)), domains)
    axes.set_xlabel("expert")
    axes.set_title(f"share of tokens, step {record['step']}")
    figure.colorbar(image, ax=axes, label="share")
    figure.tight_layout()
    return figure


def progress_line(label: str, record: dict[str, Any], max_steps: int) -> str:
    """One readable line per evaluation."""
    domains = record["domains"]
    mean = sum(r["accuracy"] for r in domains.values()) / len(domains)
    per_domain = " ".join(f"{name} {r['accuracy']:.3f}" for name, r in domains.items())
    loss = record["train"].get("loss")
    loss_text = f"loss {loss:.3f}  " if loss is not None else ""
    return (
        f"[{label}] step {record['step']:>5}/{max_steps}  {loss_text}acc {mean:.3f}  ({per_domain})  "
        f"{record['samples_per_s']:,.0f} samples/s"
    )


def comparison_table(columns: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Per-domain accuracy of several runs' last evaluations, side by side (Markdown)."""
    domains = list(columns[0][1]["domains"])
    header = "| domain | " + " | ".join(label for label, _ in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for domain in domains:
        cells = [f"{record['domains'][domain]['accuracy']:.3f}" for _, record in columns]
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    means = [sum(r["accuracy"] for r in rec["domains"].values()) / len(rec["domains"]) for _, rec in columns]
    lines.append("| **mean** | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines)
