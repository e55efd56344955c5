"""Tables in the paper's shapes, rendered as Markdown, LaTeX and CSV.

* per-domain table (Table II): one row per method, one column per domain and
  ``Avg.``; mean ± std over the selected candidate's seeds, of the task
  metric (accuracy, or AP for detection) unless another is asked for; then,
  where the results hold them, the run-level columns of
  :data:`~gemlab.results_schema.SUMMARY_COLUMNS` (worst group, macro-F1,
  many / medium / few-shot accuracy), as MoGE's and DQRoute's tables report;
* mapping-strategy ablation (Table VI): the ``gem`` router under each planner
  strategy, in the paper's order (random, argmax, expert-centric, greedy,
  GEM, exact), then any other strategy the planner registers
  (:data:`gemlab.plan.strategies.STRATEGIES`), then names it does not know.

Method and domain names come from results files, which anyone can write:
each format escapes them (a ``|`` or a newline must not add a Markdown
column or row, a ``\\`` or ``{`` must not become LaTeX, a comma must not add
a CSV field).

A cell without a finite value is missing (``–``): a metric COCO could not
measure for a domain (``ap_large`` where it has no large objects: NaN).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gemlab.plan.strategies import STRATEGIES
from gemlab.report.results import domains_of, selected, task_metric
from gemlab.results_schema import ALL_DOMAINS, PARAM_PREFIX, SUMMARY_COLUMNS, SWEPT_VARIANT

# Table VI's rows: the maps GEM is compared with, GEM's own, then the exact MIP it approaches.
PAPER_STRATEGY_ORDER = ("random", "argmax", "expert_centric", "greedy", "gem", "exact")


@dataclass(frozen=True)
class Table:
    """Rows of (label, {column: (mean, std, seeds)}), in order; a pure function of the results.

    ``scale`` and ``decimals`` say how its values are shown: scores ×100 with one decimal, counts as they are.
    """

    title: str
    columns: list[str]
    rows: list[tuple[str, dict[str, tuple[float, float, int]]]]
    scale: float = 100.0
    decimals: int = 1


# Swept keys the method label already names (the router, a planner strategy other than GEM's, a named variant).
IN_METHOD_LABEL = (f"{PARAM_PREFIX}router", f"{PARAM_PREFIX}plan.strategy", SWEPT_VARIANT.name)


def setting_columns(frame: pd.DataFrame, ignored: tuple[str, ...]) -> list[str]:
    """Swept columns that tell settings apart: every ``param:`` column that varies, but the ``ignored`` ones
    and those the method label names already (:data:`IN_METHOD_LABEL`).

    Tables that show every setting instead of selecting one (leave-one-domain-out, adaptation) label
    their rows by the method and these. Raises nothing.
    """
    skipped = (*ignored, *IN_METHOD_LABEL)
    params = sorted(c for c in frame.columns if c.startswith(PARAM_PREFIX) and c not in skipped)
    return [c for c in params if frame[c].nunique(dropna=False) > 1]


def _shown(value: object) -> object:
    """A swept value as written in a label: a whole number stored as a float (``param:`` columns are) as an int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def setting_label(method: str, keys: list[str], values: tuple) -> str:
    """A row label: the method, then ``key=value`` for each setting column (``param:`` left out)."""
    pairs = zip(keys, values, strict=True)
    return " ".join([method, *(f"{k.removeprefix(PARAM_PREFIX)}={_shown(v)}" for k, v in pairs)])


def metric_columns(picked: pd.DataFrame, metric: str) -> dict[str, tuple[str, str]]:
    """Column label -> the (domain, metric) its cells hold: each domain's ``metric``, its ``all`` value
    (``Avg.``), and each summary metric the selected rows hold a finite ``all`` value of."""
    columns = {d: (d, metric) for d in domains_of(picked[picked["metric"] == metric])} | {"Avg.": (ALL_DOMAINS, metric)}
    run_level = picked[(picked["domain"] == ALL_DOMAINS) & np.isfinite(picked["value"])]
    held = set(run_level["metric"])
    return columns | {label: (ALL_DOMAINS, m) for label, m in SUMMARY_COLUMNS.items() if m in held and m != metric}


def cells_of(rows: pd.DataFrame, columns: dict[str, tuple[str, str]]) -> dict[str, tuple[float, float, int]]:
    """Each column's mean ± std over the rows (its seeds) where it has a finite value; raises nothing."""
    cells = {}
    for column, (domain, metric) in columns.items():
        values = rows[(rows["domain"] == domain) & (rows["metric"] == metric)]["value"]
        if np.isfinite(values).any():
            cells[column] = (float(values.mean()), float(values.std(ddof=0)), len(values))
    return cells


def _selected_by(select: str | None) -> str:
    return "" if select is None else f", selected by {select}"


def per_domain_table(frame: pd.DataFrame, metric: str | None = None, select: str | None = None) -> Table:
    """Each method's selected candidate: ``metric`` (None: the task metric) per domain, on average, and the
    summary columns the results hold; the candidate is selected by ``select`` (None: the task metric).

    Raises ReportError (from :func:`~gemlab.report.results.task_metric`) only when ``metric`` is None and
    the results hold no single task metric, which :func:`~gemlab.report.results.load_results` refuses.
    """
    metric = metric or task_metric(frame)
    picked = selected(frame, select)
    columns = metric_columns(picked, metric)
    rows = [(method, cells_of(group, columns)) for method, group in picked.groupby("method", sort=True)]
    return Table(f"per-domain {metric} (mean ± std over seeds{_selected_by(select)})", list(columns), rows)


def ablation_table(frame: pd.DataFrame, metric: str | None = None, select: str | None = None) -> Table | None:
    """The gem router under each planner strategy; None unless the results hold two strategies.

    ``metric`` None is the task metric, ``select`` as in :func:`per_domain_table`. Raises ReportError as
    :func:`per_domain_table` does.
    """
    gem = frame[frame["router"] == "gem"].copy()
    if gem["strategy"].nunique() < 2:
        return None
    metric = metric or task_metric(frame)
    gem["method"] = gem["strategy"]
    picked = selected(gem, select)
    columns = metric_columns(picked, metric)
    order = strategy_order(set(picked["method"]))
    rows = [(strategy, cells_of(picked[picked["method"] == strategy], columns)) for strategy in order]
    title = f"mapping strategy ablation, {metric} (mean ± std over seeds{_selected_by(select)})"
    return Table(title, list(columns), rows)


def _paper_rank(strategy: str) -> int:
    return PAPER_STRATEGY_ORDER.index(strategy) if strategy in PAPER_STRATEGY_ORDER else len(PAPER_STRATEGY_ORDER)


def strategy_order(strategies: set[str]) -> list[str]:
    """``strategies`` in the ablation's row order (see the module docstring); none is left out; raises nothing."""
    registered = sorted(STRATEGIES, key=_paper_rank)  # a stable sort: the registry's order after the paper's
    return [s for s in registered if s in strategies] + sorted(strategies - set(STRATEGIES))


def _text(cell: tuple[float, float, int] | None, scale: float, decimals: int) -> str:
    if cell is None:
        return "–"
    mean, std, seeds = cell
    mean_text = f"{scale * mean:.{decimals}f}"
    return f"{mean_text} ± {scale * std:.{decimals}f}" if seeds > 1 else mean_text


def _markdown_escaped(text: str) -> str:
    """Text for one Markdown table cell: on one line, its ``|`` and backslashes literal."""
    return re.sub(r"([\\|])", r"\\\1", " ".join(text.splitlines()))


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def _latex_escaped(text: str) -> str:
    """Text that LaTeX typesets as written, on one line."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIALS[m[0]], " ".join(text.splitlines()))


def to_markdown(table: Table, scale: float | None = None) -> str:
    """A GitHub-style Markdown table, values ×``scale`` (None: the table's own); raises nothing."""
    scale = table.scale if scale is None else scale
    header = " | ".join(_markdown_escaped(c) for c in table.columns)
    lines = [f"**{_markdown_escaped(table.title)}** (×{scale:g})", "", f"| method | {header} |"]
    lines.append("|---|" + "---:|" * len(table.columns))
    for label, cells in table.rows:
        texts = [_text(cells.get(c), scale, table.decimals) for c in table.columns]
        lines.append(f"| {_markdown_escaped(label)} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def to_latex(table: Table, scale: float | None = None) -> str:
    """A booktabs ``tabular``, values ×``scale`` (None: the table's own); raises nothing."""
    scale = table.scale if scale is None else scale
    lines = [
        r"\begin{tabular}{l" + "r" * len(table.columns) + "}",
        r"\toprule",
        "Method & " + " & ".join(_latex_escaped(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for label, cells in table.rows:
        texts = [_text(cells.get(c), scale, table.decimals).replace("±", r"$\pm$") for c in table.columns]
        lines.append(_latex_escaped(label) + " & " + " & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def to_csv(table: Table) -> str:
    """One record per method × column: the unscaled mean, std and seeds (fields quoted as needed); raises nothing."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["method", "column", "mean", "std", "seeds"])
    for label, cells in table.rows:
        writer.writerows([label, column, *cells[column]] for column in table.columns if column in cells)
    return text.getvalue()
