"""What a run leaves behind and prints: progress lines, TensorBoard events, ``results.parquet``, a summary.

``results.parquet`` is long-form -- one row per run x domain x metric x step,
with the config's key fields as columns -- so that a sweep's or several
runs' tables concatenate, and reports are group-bys over one schema. Its
file name, columns and metric names are :mod:`gemlab.results_schema`'s.
"""

from __future__ import annotations

import io
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gemlab.engine.forgetting import adaptation_metrics
from gemlab.engine.model import method_label, needs_plan
from gemlab.plan.plan import Plan
from gemlab.results_schema import (
    ACCURACY,
    ALL_DOMAINS,
    ALLREDUCE_BYTES_PER_STEP,
    CAPACITY_OVERLOAD,
    CPU_MS_PER_SAMPLE,
    CROSS_EXPERT,
    EXPERT_LOAD,
    OVERLOADED_EXPERTS,
    PARAMETER_METRICS,
    PLAN_LP_RATIO,
    PLAN_VALUE,
    RESULTS_FILE,
    SAMPLES_PER_S,
    SHOT_METRICS,
    WORST_GROUP_ACCURACY,
    arrow_schema,
    expert_metric,
    heldout_metric,
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
        "router": method_label(cfg),
        "strategy": cfg.plan.strategy if planned else None,
        "precision": cfg.plan.precision if planned and cfg.plan.strategy == "gem" else None,
        "num_experts": cfg.moe.num_experts,
        "seed": cfg.seed,
    }


def domain_scores(record: dict[str, Any]) -> dict[str, float]:
    """Each domain's score in the record's task metric (``record["metric"]``: accuracy, ap)."""
    return {name: result[record["metric"]] for name, result in record["domains"].items()}


def mean_score(record: dict[str, Any]) -> float:
    """The mean over domains of the record's task metric."""
    scores = list(domain_scores(record).values())
    return sum(scores) / len(scores)


def _mean_over_domains(metric: str, values: list[float]) -> float:
    """A metric's ``all`` value: the mean over domains, NaN when a domain's is NaN -- except for a shot group's
    accuracy, which a domain without a tested class of that group leaves undefined, not bad: its mean is over
    the domains where it is defined (NaN where it is nowhere)."""
    if metric in SHOT_METRICS:
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else float("nan")
    return sum(values) / len(values)


def domain_metrics(domains: dict[str, dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(domain, metric, value) triples of one evaluation's domain results: each scalar metric and expert share,
    each scalar's mean over domains under ``all`` (see :func:`_mean_over_domains`), and with accuracies the
    worst-group accuracy under ``all`` (the lowest domain accuracy; NaN when a domain's is NaN). Raises nothing."""
    rows = []
    for domain, result in domains.items():
        rows += [(domain, metric, value) for metric, value in result.items() if metric != EXPERT_LOAD]
        rows += [(domain, expert_metric(EXPERT_LOAD, j), share) for j, share in enumerate(result[EXPERT_LOAD])]
    results = list(domains.values())
    for metric in (m for m in results[0] if m != EXPERT_LOAD):
        rows.append((ALL_DOMAINS, metric, _mean_over_domains(metric, [r[metric] for r in results])))
    if ACCURACY in results[0]:
        accuracies = [r[ACCURACY] for r in results]
        worst = float("nan") if any(math.isnan(a) for a in accuracies) else min(accuracies)
        rows.append((ALL_DOMAINS, WORST_GROUP_ACCURACY, worst))
    return rows


def record_metrics(record: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(domain, metric, value) triples of one evaluation record; raises KeyError for a record without a field.

    Every scalar a task reports for a domain (accuracy and loss; ap, ap50 ...) is a row, and its mean
    over domains a row of the ``all`` domain. Each domain the record lists as ``heldout`` (never trained
    on) repeats its task metric as ``heldout_<metric>``; an adapted run's record adds adaptability and
    forgetting (:func:`~gemlab.engine.forgetting.adaptation_metrics`).
    """
    rows = domain_metrics(record["domains"])
    metric = record["metric"]
    rows += [(d, heldout_metric(metric), record["domains"][d][metric]) for d in record.get("heldout", ())]
    rows += adaptation_metrics(record)
    for domain, scores in record.get("cross_expert", {}).items():
        rows += [(domain, expert_metric(CROSS_EXPERT, j), value) for j, value in enumerate(scores)]
    rows += [(ALL_DOMAINS, train_metric(key), value) for key, value in record["train"].items()]
    rows.append((ALL_DOMAINS, SAMPLES_PER_S, record["samples_per_s"]))
    rows.append((ALL_DOMAINS, CPU_MS_PER_SAMPLE, record["cpu_ms_per_sample"]))
    rows.append((ALL_DOMAINS, ALLREDUCE_BYTES_PER_STEP, float(record["allreduce_bytes_per_step"])))
    return rows


def parameter_metrics(parameters: Mapping[str, Any] | None) -> list[tuple[str, str, float]]:
    """(``all``, metric, value) rows of a model's parameter counts (run.json's ``parameters``; None: none).

    A count the record lacks or holds as null (the hidden width of a model without MoE layers) has no row;
    a run.json written before counts were recorded has none. Raises nothing.
    """
    counts = parameters or {}
    held = {key: metric for key, metric in PARAMETER_METRICS.items() if counts.get(key) is not None}
    return [(ALL_DOMAINS, metric, counts[key]) for key, metric in held.items()]


def plan_metrics(plan: Plan | None) -> list[tuple[str, str, float]]:
    """(``all``, metric, value) rows of the plan a run trained by (None: a run without one): its value
    Σ c_ij, value / LP bound (when the plan has a bound), the load above capacity summed over experts as a
    share of the total capacity, and the number of overloaded experts -- GEM Table VI's violations, which
    only a strategy that ignores capacity (``argmax``) has. Raises nothing.
    """
    if plan is None:
        return []
    excess = sum(plan.violations.values())
    rows = [
        (ALL_DOMAINS, PLAN_VALUE, plan.value),
        (ALL_DOMAINS, CAPACITY_OVERLOAD, excess / float(plan.capacity.sum())),
        (ALL_DOMAINS, OVERLOADED_EXPERTS, float(len(plan.violations))),
    ]
    return rows + ([(ALL_DOMAINS, PLAN_LP_RATIO, plan.ratio)] if plan.ratio is not None else [])


def run_constants(parameters: Mapping[str, Any] | None, plan: Plan | None) -> list[tuple[str, str, float]]:
    """The run-level rows that do not change during training: parameter counts and the plan's quality."""
    return parameter_metrics(parameters) + plan_metrics(plan)


def results_table(
    cfg: DictConfig,
    name: str,
    history: Sequence[dict[str, Any]],
    extra: dict[str, Any] | None = None,
    constants: Sequence[tuple[str, str, float]] = (),
):
    """The long-form table of one run's history; ``extra`` adds constant columns (a sweep's trial and params).

    ``constants`` (:func:`run_constants`) become rows at the last evaluated step, where reports read a run.
    """
    import pyarrow as pa

    fields = key_fields(cfg, name)
    rows = [
        {**fields, "domain": domain, "metric": metric, "step": record["step"], "value": float(value)}
        for record in history
        for domain, metric, value in record_metrics(record)
    ]
    if history:
        last = history[-1]["step"]
        rows += [
            {**fields, "domain": domain, "metric": metric, "step": last, "value": float(value)}
            for domain, metric, value in constants
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


def write_results(
    run_dir: Location,
    cfg: DictConfig,
    name: str,
    history: Sequence[dict[str, Any]],
    constants: Sequence[tuple[str, str, float]] = (),
) -> Location:
    """``results.parquet`` of the whole history, with the run's constant rows (:func:`run_constants`)."""
    return write_table(results_table(cfg, name, history, constants=constants), run_dir / RESULTS_FILE)


class TensorBoardLog:
    """Scalars per domain and per loss, the routing heatmap and any preview images, for each evaluation.

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
        for domain, image in record.get("previews", {}).items():  # detection: predicted boxes on a val image
            self.writer.add_image(f"predictions/{domain}", image, step)
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
    per_domain = " ".join(f"{name} {score:.3f}" for name, score in domain_scores(record).items())
    loss = record["train"].get("loss")
    loss_text = f"loss {loss:.3f}  " if loss is not None else ""
    return (
        f"[{label}] step {record['step']:>5}/{max_steps}  {loss_text}{record['metric']} {mean_score(record):.3f}  "
        f"({per_domain})  "
        f"{record['samples_per_s']:,.0f} samples/s"
    )


def comparison_table(columns: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Per-domain scores (the task metric) of several runs' last evaluations, side by side (Markdown)."""
    domains = list(columns[0][1]["domains"])
    header = "| domain | " + " | ".join(label for label, _ in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for domain in domains:
        cells = [f"{domain_scores(record)[domain]:.3f}" for _, record in columns]
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"{mean_score(record):.3f}" for _, record in columns) + " |")
    return "\n".join(lines)
