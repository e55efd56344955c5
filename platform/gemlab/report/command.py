"""``gemlab report``: tables and figures from results files.

    gemlab report runs/quickstart-gem-*/results.parquet runs/quickstart-topk-*/results.parquet --out report/
    gemlab report runs/sweeps/sweep-tiny-1a2b3c4d --out report/      # a folder: every results.parquet in it

Classification runs are selected and reported by accuracy, detection runs
by COCO AP (``ap``); ``--metric`` reports another (``ap50``, ``loss``), and
results mixing the two tasks are refused.

Writes ``per_domain.{md,tex,csv}``, ``ablation.{md,tex,csv}`` (when the
results hold several planner strategies), ``heatmap-<method>.png``,
``cross_expert-<method>.png`` (runs with a domain → expert table) and
``curve-<parameter>.png`` (parameters that vary), and prints the tables.
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


def _table_texts(frame, metric: str) -> dict[str, str]:
    """File name → text of each table file (Markdown, LaTeX, CSV)."""
    from gemlab.report.tables import ablation_table, per_domain_table, to_csv, to_latex, to_markdown

    texts = {}
    for name, table in (("per_domain", per_domain_table(frame, metric)), ("ablation", ablation_table(frame, metric))):
        if table is not None:
            texts |= {f"{name}.md": to_markdown(table) + "\n", f"{name}.tex": to_latex(table) + "\n"}
            texts[f"{name}.csv"] = to_csv(table)
    return texts


def run(args: argparse.Namespace) -> int:
    """Raises ReportError (a GemlabError) naming the file, folder or metric that stops the report."""
    from gemlab.files import write_text_atomically
    from gemlab.report.figures import cross_expert_matrices, parameter_curves, routing_heatmaps
    from gemlab.report.output import check_output_folder, destinations
    from gemlab.report.results import load_results, task_metric, unscored_methods

    check_output_folder(args.out)
    frame = load_results(args.results, args.metric)
    task = task_metric(frame)
    metric = args.metric or task
    left_out = unscored_methods(frame)
    if left_out:
        names = ", ".join(map(repr, left_out))
        print(f"gemlab report: note: no finite {task} to select by, left out: {names}", file=sys.stderr)
    texts = _table_texts(frame, metric)
    figures = [*routing_heatmaps(frame), *cross_expert_matrices(frame), *parameter_curves(frame, metric)]
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
