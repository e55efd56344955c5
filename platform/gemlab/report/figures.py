"""Figures as PNG: routing heatmaps, cross-expert matrices, metric-vs-parameter curves.

Each figure has axis labels with units, a colour bar or a legend, and a
title that says which runs it shows; each is a pure function of the results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gemlab.report.results import ALL, domains_of, last_evaluations, selected


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _matrix(rows: pd.DataFrame, prefix: str) -> tuple[list[str], np.ndarray]:
    """Domain × expert means of the ``<prefix><j>`` metrics."""
    part = rows[rows["metric"].str.startswith(prefix)].copy()
    part["expert"] = part["metric"].str[len(prefix) :].astype(int)
    domains = domains_of(part)
    pivot = part.groupby(["domain", "expert"])["value"].mean().unstack("expert").reindex(domains)
    return domains, pivot.to_numpy()


def _heat(path: Path, domains: list[str], values: np.ndarray, title: str, label: str, marks=None) -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(1.6 + 0.55 * values.shape[1], 1.2 + 0.45 * len(domains)))
    image = axes.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes.set_xticks(range(values.shape[1]), [str(j) for j in range(values.shape[1])])
    axes.set_yticks(range(len(domains)), domains)
    axes.set_xlabel("expert")
    axes.set_ylabel("domain")
    axes.set_title(title, fontsize=9)
    for row, column in marks or []:
        axes.add_patch(plt.Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    figure.colorbar(image, ax=axes, label=label)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def routing_heatmaps(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Per method: the share of each domain's routed tokens that each expert received (last evaluation)."""
    paths = []
    for method, rows in selected(frame).groupby("method"):
        domains, values = _matrix(rows, "expert_load/")
        if len(domains):
            title = f"routing heatmap: {method}\n(selected runs, mean over seeds)"
            paths.append(_heat(out / f"heatmap-{method}.png", domains, values, title, "share of tokens"))
    return paths


def cross_expert_matrices(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Per method with a domain → expert table: each domain's accuracy through each expert; assigned one boxed."""
    paths = []
    for method, rows in selected(frame).groupby("method"):
        domains, values = _matrix(rows, "cross_expert/")
        if not len(domains):
            continue
        _, loads = _matrix(rows, "expert_load/")
        marks = [(i, int(np.nanargmax(loads[i]))) for i in range(len(domains))] if loads.size else []
        title = f"cross-expert accuracy: {method}\n(red box: the expert the domain is routed to)"
        paths.append(_heat(out / f"cross_expert-{method}.png", domains, values, title, "accuracy", marks))
    return paths


def parameter_curves(frame: pd.DataFrame, out: Path, metric: str = "accuracy") -> list[Path]:
    """Mean ``all``-domain metric against each numeric parameter that varies (λ, p, expert count, ...)."""
    last = last_evaluations(frame)
    scores = last[(last["domain"] == ALL) & (last["metric"] == metric)]
    candidates = [c for c in frame.columns if c.startswith("param:")] + ["num_experts", "precision"]
    paths = []
    plt = _pyplot()
    for column in candidates:
        if column not in scores:
            continue
        x = pd.to_numeric(scores[column], errors="coerce")  # runs without the parameter (or text values) drop out
        swept = scores.assign(x=x)[x.notna()]
        if swept["x"].nunique() < 2:
            continue
        figure, axes = plt.subplots(figsize=(5, 3.5))
        for method, rows in swept.groupby("method"):
            stats = rows.groupby("x")["value"].agg(["mean", "std"]).fillna(0).sort_index()
            axes.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=method)
        name = column.removeprefix("param:")
        if (swept["x"] > 0).all() and swept["x"].max() / swept["x"].min() >= 100:
            axes.set_xscale("log")
        axes.set_xlabel(name)
        axes.set_ylabel(f"{metric} (mean over domains)")
        axes.set_title(f"{metric} vs {name}\n(last evaluation; bars: std over runs)", fontsize=9)
        axes.legend(title="method", fontsize=8)
        figure.tight_layout()
        path = out / f"curve-{name}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths
