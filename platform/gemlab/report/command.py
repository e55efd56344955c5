"""``gemlab report``: tables and figures from results files.

    gemlab report runs/quickstart-gem-*/results.parquet runs/quickstart-topk-*/results.parquet --out report/
    gemlab report runs/sweeps/sweep-tiny-1a2b3c4d --out report/      # a folder: every results.parquet in it
    gemlab report runs/sweeps/sweep-moge_digits-… --out report/ --select worst_group_accuracy   # MoGE's selection

Classification runs are selected and reported by accuracy, detection runs
by COCO AP (``ap``); ``--metric`` reports another (``ap50``, ``loss``),
``--select`` selects each method's candidate by another
(``worst_group_accuracy``, ``macro_f1``), and results mixing the two tasks
are refused. The per-domain table adds worst-group, macro-F1 and
many/medium/few-shot columns where the results hold them.

Writes ``per_domain.{md,tex,csv}``, ``ablation.{md,tex,csv}`` (when the
results hold several planner strategies), ``settings.{md,tex,csv}`` (when a
swept key but the seed varies: every setting's per-domain metric, none
selected), ``heldout.{md,tex,csv}`` (when
runs held a domain out: its score per setting), ``adaptation.{md,tex,csv}``
(when runs adapted a trained parent: adaptability and forgetting per setting),
``parameters.{md,tex,csv}`` (the parameter counts runs recorded, per
setting), ``plans.{md,tex,csv}`` (runs that followed a plan: the mean score beside the
plan's value, value / LP and capacity violations, per setting),
``claims.{md,tex,csv}`` and ``claims.png`` (runs with experts: each expert's true and false positive
rates of routing, GEM Fig. 8, as :mod:`gemlab.report.claims` defines them),
``heatmap-<method>.png``,
``cross_expert-<method>.png`` (runs with a domain → expert table) and
``curve-<parameter>.png`` (parameters that vary), ``adaptation.png`` (adapted
runs: each method's adaptability against its forgetting), and prints the tables.
A method or parameter name that is not a plain file name is written in
safe characters with a digest of the original (``heatmap-a_b-1f2e3d4c5b.png``).

``--out`` is checked before the results are read, and the results (every
column, and the metric) before anything is written: a refused report leaves
``--out`` as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments; raises nothing."""
    parser.add_argument(
        "results", nargs="+", help="results.parquet files, or folders holding them (paths or storage URIs: s3://…)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables and figures")
    parser.add_argument(
        "--metric",
        help="the metric of the tables and curves (default: the task metric the results hold, accuracy or ap)",
    )
    parser.add_argument(
        "--select",
        help="select each method's candidate by this metric's all-domain mean over seeds, the higher the better "
        "(worst_group_accuracy, macro_f1; default: the task metric)",
    )


def _table_texts(frame, metric: str, select: str | None) -> dict[str, str]:
    """File name → text of each table file (Markdown, LaTeX, CSV)."""
    from gemlab.report.adaptation import adaptation_table
    from gemlab.report.claims import claims_table
    from gemlab.report.heldout import heldout_table
    from gemlab.report.parameters import parameters_table
    from gemlab.report.plans import plans_table
    from gemlab.report.settings import settings_table
    from gemlab.report.tables import ablation_table, per_domain_table, to_csv, to_latex, to_markdown

    texts = {}
    tables = (
        ("per_domain", per_domain_table(frame, metric, select)),
        ("ablation", ablation_table(frame, metric, select)),
        ("settings", settings_table(frame, metric)),  # every setting of a swept key, none selected (Table V)
        ("heldout", heldout_table(frame)),  # leave-one-domain-out runs (data.holdout): every setting, unselected
        ("adaptation", adaptation_table(frame)),  # runs adapted from a parent (adapt.parent): every setting
        ("parameters", parameters_table(frame)),  # each setting's parameter counts (moe.param_budget)
        ("plans", plans_table(frame)),  # each planned setting's score beside its plan's value and violations
        ("claims", claims_table(frame, select)),  # each method's experts' TPR and FPR (GEM Fig. 8)
    )
    for name, table in tables:
        if table is not None:
            texts |= {f"{name}.md": to_markdown(table) + "\n", f"{name}.tex": to_latex(table) + "\n"}
            texts[f"{name}.csv"] = to_csv(table)
    return texts


def run(args: argparse.Namespace) -> int:
    """Raises ReportError (a GemlabError) naming the file, folder or metric that stops the report."""
    from gemlab.files import write_text_atomically
    from gemlab.report.figures import (
        adaptation_tradeoff,
        cross_expert_matrices,
        expert_claims_figure,
        parameter_curves,
        routing_heatmaps,
    )
    from gemlab.report.output import check_output_folder, destinations
    from gemlab.report.results import check_selection, load_results, task_metric, unscored_methods

    check_output_folder(args.out)
    frame = load_results(args.results, args.metric)
    check_selection(frame, args.select)
    task = task_metric(frame)
    metric = args.metric or task
    left_out = unscored_methods(frame, args.select)
    if left_out:
        names = ", ".join(map(repr, left_out))
        print(f"gemlab report: note: no finite {args.select or task} to select by, left out: {names}", file=sys.stderr)
    texts = _table_texts(frame, metric, args.select)
    figures = [
        *routing_heatmaps(frame, args.select),
        *cross_expert_matrices(frame, args.select),
        *parameter_curves(frame, metric),
        *adaptation_tradeoff(frame),
        *expert_claims_figure(frame, args.select),
    ]
    paths = destinations(args.out, [*texts, *(figure.file_name for figure in figures)])
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        write_text_atomically(paths[name], text)
        if name.endswith(".md"):
            print(text)
    for figure in figures:
        figure.save(paths[figure.file_name])
    print(f"wrote {len(texts) // 3} tables and {len(figures)} figures to {args.out}")
    return 0
