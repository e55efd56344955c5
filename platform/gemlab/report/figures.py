"""Figures as PNG: routing heatmaps, cross-expert matrices, metric-vs-parameter curves, adaptability vs forgetting,
experts' claims (TPR against FPR).

Each figure has axis labels with units, a colour bar or a legend, and a
title that says which runs it shows; each is a pure function of the results.
The functions here decide which figures there are and what each shows
(:class:`Figure`); drawing waits for :meth:`Figure.save`, so that every
destination can be checked before the first file is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype

from gemlab.files import atomic_path
from gemlab.report.claims import FPR, TPR, claim_points
from gemlab.report.output import safe_name
from gemlab.report.results import domains_of, last_evaluations, selected, task_metric
from gemlab.results_schema import (
    ADAPTABILITY,
    ALL_DOMAINS,
    CROSS_EXPERT,
    EXPERT_LOAD,
    FORGETTING,
    PARAM_PREFIX,
    SWEPT_SEED,
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _literal(text: object) -> str:
    """Text that matplotlib shows as written: a ``$`` in a name read from results would start mathtext.

    Control characters other than newlines (a NUL has no glyph) show as ``�``.
    """
    return "".join(c if c.isprintable() or c == "\n" else "\ufffd" for c in str(text)).replace("$", r"\$")


@dataclass(frozen=True)
class Figure:
    """One PNG to write: a safe file name, and how to draw it (given pyplot, returns a matplotlib figure)."""

    file_name: str
    draw: Callable[[Any], Any]

    def save(self, path: Path) -> None:
        """Draw and write through a temp file renamed over ``path``: whole or absent; raises OSError."""
        plt = _pyplot()
        figure = self.draw(plt)
        try:
            with atomic_path(path) as temp:
                figure.savefig(temp, format="png", dpi=120)
        finally:
            plt.close(figure)


def _family(rows: pd.DataFrame, family: str) -> pd.DataFrame:
    """Rows of the ``<family>/<j>`` metrics (numbered, as loading checked), with the expert ``j`` as a column."""
    part = rows[rows["metric"].str.startswith(f"{family}/")]
    return part.assign(expert=part["metric"].str.removeprefix(f"{family}/").astype(int))


def _matrix(part: pd.DataFrame, domains: list[str], experts: list[int]) -> np.ndarray:
    """Domain × expert means of a family's rows (NaN where the results have none)."""
    pivot = part.groupby(["domain", "expert"])["value"].mean().unstack("expert")
    return pivot.reindex(index=domains, columns=experts).to_numpy(dtype=float)


def _heat(domains, experts, values, title, label, marks, plt):
    figure, axes = plt.subplots(figsize=(1.6 + 0.55 * len(experts), 1.2 + 0.45 * len(domains)))
    image = axes.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(experts)), [str(j) for j in experts])
    axes.set_yticks(range(len(domains)), [_literal(d) for d in domains])
    axes.set_xlabel("expert")
    axes.set_ylabel("domain")
    axes.set_title(_literal(title), fontsize=9)
    for row, column in marks:
        axes.add_patch(plt.Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    figure.colorbar(image, ax=axes, label=label)
    figure.tight_layout()
    return figure


def _first_seed(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows of the lowest seed, and that seed.

    An expert's number means nothing across seeds: each seed's plan (its k-means++ anchors) or learned
    router numbers the experts its own way, so a mean over seeds of a domain × expert matrix would mix
    unrelated experts. The matrices show one seed's run; the tables average what does not depend on
    numbering (the claims' rates, the scores).
    """
    seed = int(rows["seed"].min())
    return rows[rows["seed"] == seed], seed


def routing_heatmaps(frame: pd.DataFrame, select: str | None = None) -> list[Figure]:
    """Per method: the share of each domain's routed tokens that each expert got (last evaluation) in the
    selected candidate's first seed (:func:`_first_seed`), the candidate selected by ``select`` (None: the
    task metric); raises nothing."""
    figures = []
    for method, rows in selected(frame, select).groupby("method"):
        rows, seed = _first_seed(rows)
        loads = _family(rows, EXPERT_LOAD)
        domains, experts = domains_of(loads), sorted(set(loads["expert"]))
        if domains:
            values = _matrix(loads, domains, experts)
            title = f"routing heatmap: {method}\n(selected candidate, seed {seed})"
            draw = partial(_heat, domains, experts, values, title, "share of tokens", [])
            figures.append(Figure(f"heatmap-{safe_name(method)}.png", draw))
    return figures


def _routed_marks(loads: pd.DataFrame, domains: list[str], experts: list[int]) -> list[tuple[int, int]]:
    """(row, column) of each domain's most-loaded expert; none where a domain has no loads or that expert no column."""
    load_experts = sorted(set(loads["expert"]))
    routed = [
        (i, load_experts[int(np.nanargmax(row))])
        for i, row in enumerate(_matrix(loads, domains, load_experts))
        if np.isfinite(row).any()
    ]
    return [(i, experts.index(expert)) for i, expert in routed if expert in experts]


def cross_expert_matrices(frame: pd.DataFrame, select: str | None = None) -> list[Figure]:
    """Per method whose routers can be forced: each domain's task metric through each expert, its most-routed
    one boxed, in the first seed (:func:`_first_seed`) of the candidate selected by ``select`` (None: the
    task metric).

    The task metric (accuracy, ap) names the title and the colour bar. Raises ReportError only for results
    without a single task metric, which :func:`~gemlab.report.results.load_results` refuses.
    """
    figures = []
    for method, rows in selected(frame, select).groupby("method"):
        rows, seed = _first_seed(rows)
        cross = _family(rows, CROSS_EXPERT)
        domains, experts = domains_of(cross), sorted(set(cross["expert"]))
        if not domains:
            continue
        values = _matrix(cross, domains, experts)
        marks = _routed_marks(_family(rows, EXPERT_LOAD), domains, experts)
        metric = task_metric(frame)
        title = f"cross-expert {metric}: {method}, seed {seed}\n(red box: the expert the domain is routed to)"
        draw = partial(_heat, domains, experts, values, title, metric, marks)
        figures.append(Figure(f"cross_expert-{safe_name(method)}.png", draw))
    return figures


def _curve(swept: pd.DataFrame, name: str, metric: str, plt):
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for method, rows in swept.groupby("method"):
        stats = rows.groupby("x")["value"].agg(["mean", "std"]).fillna(0).sort_index()
        axes.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=_literal(method))
    if (swept["x"] > 0).all() and swept["x"].max() / swept["x"].min() >= 100:
        axes.set_xscale("log")
    axes.set_xlabel(_literal(name))
    axes.set_ylabel(_literal(f"{metric} (mean over domains)"))
    axes.set_title(_literal(f"{metric} vs {name}\n(last evaluation; bars: std over runs)"), fontsize=9)
    axes.legend(title="method", fontsize=8)
    figure.tight_layout()
    return figure


def _numeric(values: pd.Series) -> pd.Series:
    """A parameter's values as finite floats; truth values, text that is no number, lists, infinities become NaN."""
    if is_bool_dtype(values):
        return pd.Series(np.nan, index=values.index)
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return numbers.where(np.isfinite(numbers))


def parameter_curves(frame: pd.DataFrame, metric: str | None = None) -> list[Figure]:
    """Mean ``all``-domain metric (None: the task metric) against each numeric parameter that varies (λ, p, ...;
    not the seed, which is what the error bars are over).

    Runs without the parameter, or with a value that is not a finite number,
    and runs whose metric is not finite (NaN: diverged, or nothing COCO could
    measure) drop out of its curve; a parameter with fewer than two such
    values has none. Raises ReportError as :func:`cross_expert_matrices` does, only when ``metric`` is None.
    """
    metric = metric or task_metric(frame)
    last = last_evaluations(frame)
    scores = last[(last["domain"] == ALL_DOMAINS) & (last["metric"] == metric) & np.isfinite(last["value"])]
    swept = [c for c in frame.columns if c.startswith(PARAM_PREFIX) and c != SWEPT_SEED.name]  # seeds: no curve
    candidates = [*swept, "num_experts", "precision"]
    figures = []
    for column in candidates:
        x = _numeric(scores[column])
        swept = scores.assign(x=x)[x.notna()]
        if swept["x"].nunique() >= 2:
            name = column.removeprefix(PARAM_PREFIX)
            figures.append(Figure(f"curve-{safe_name(name)}.png", partial(_curve, swept, name, metric)))
    return figures


def _tradeoff(points: pd.DataFrame, metric: str, plt):
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for method, rows in points.groupby("method"):
        mean, std = rows[[ADAPTABILITY, FORGETTING]].mean(), rows[[ADAPTABILITY, FORGETTING]].std(ddof=0)
        axes.errorbar(
            mean[ADAPTABILITY],
            mean[FORGETTING],
            xerr=std[ADAPTABILITY],
            yerr=std[FORGETTING],
            marker="o",
            capsize=3,
            label=_literal(f"{method} ({len(rows)} runs)"),
        )
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set_xlabel(_literal(f"adaptability: {metric} of the added domains (higher is better)"), fontsize=8)
    axes.set_ylabel(_literal(f"forgetting: drop in {metric} (lower is better)"), fontsize=8)
    axes.set_title("adaptability vs forgetting (mean over domains; bars: std over runs)", fontsize=9)
    axes.legend(title="method", fontsize=8)
    figure.tight_layout()
    return figure


def adaptation_tradeoff(frame: pd.DataFrame) -> list[Figure]:
    """GEM Fig. 11's trade-off: each method's mean adaptability against its mean forgetting over its runs.

    One figure when runs adapted a parent (:mod:`gemlab.engine.forgetting`), none otherwise; a run without
    a finite value of both drops out. Raises ReportError as :func:`parameter_curves` does.
    """
    last = last_evaluations(frame)
    rows = last[(last["domain"] == ALL_DOMAINS) & last["metric"].isin((ADAPTABILITY, FORGETTING))]
    points = rows.pivot_table(index=["method", "run"], columns="metric", values="value").reset_index()
    if not {ADAPTABILITY, FORGETTING} <= set(points.columns):
        return []
    points = points[np.isfinite(points[ADAPTABILITY]) & np.isfinite(points[FORGETTING])]
    if points.empty:
        return []
    return [Figure("adaptation.png", partial(_tradeoff, points, task_metric(frame)))]


def _claims(points: pd.DataFrame, plt):
    figure, axes = plt.subplots(figsize=(4.5, 4.2))
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.5, linestyle="--")
    for method, rows in points.groupby("method"):
        marker = axes.scatter(rows[FPR], rows[TPR], s=14, alpha=0.45)
        colour = marker.get_facecolor()[0]
        axes.scatter(rows[FPR].mean(), rows[TPR].mean(), s=70, color=colour, edgecolor="black",
                     label=_literal(f"{method} ({rows['seed'].nunique()} seeds)"))  # fmt: skip
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("FPR: share of other datasets' tokens the expert claims")
    axes.set_ylabel("TPR: share of its own datasets' tokens")
    axes.set_title("experts' claims (small: one expert of one run;\nlarge: the method's mean)", fontsize=9)
    axes.legend(title="method", fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


def expert_claims_figure(frame: pd.DataFrame, select: str | None = None) -> list[Figure]:
    """GEM Fig. 8's comparison: each expert of each selected run as a point (FPR, TPR) of its routing
    (:mod:`gemlab.report.claims` defines both), per method; none when no run routed through experts.
    Raises nothing."""
    points = claim_points(frame, select).astype({TPR: float, FPR: float})
    points = points[np.isfinite(points[TPR]) & np.isfinite(points[FPR])]
    return [Figure("claims.png", partial(_claims, points))] if not points.empty else []
