"""``gemlab report``: tables and figures from results files.

    gemlab report runs/quickstart-gem-*/results.parquet runs/quickstart-topk-*/results.parquet --out report/
    gemlab report runs/sweeps/sweep-tiny-1a2b3c4d --out report/      # a folder: every results.parquet in it

Writes ``per_domain.{md,tex,csv}``, ``ablation.{md,tex,csv}`` (when the
results hold several planner strategies), ``heatmap-<method>.png``,
``cross_expert-<method>.png`` (runs with a domain → expert table) and
``curve-<parameter>.png`` (parameters that vary), and prints the tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results", nargs="+", help="results.parquet files, or folders holding them (paths or storage URIs: s3://…)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables and figures")
    parser.add_argument("--metric", default="accuracy")


def run(args: argparse.Namespace) -> int:
    from gemlab.files import write_text_atomically
    from gemlab.report.figures import cross_expert_matrices, parameter_curves, routing_heatmaps
    from gemlab.report.results import ReportError, load_results
    from gemlab.report.tables import ablation_table, per_domain_table, to_csv, to_latex, to_markdown

    try:
        frame = load_results(args.results)
    except ReportError as error:
        print(f"gemlab report: error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    tables = {"per_domain": per_domain_table(frame, args.metric), "ablation": ablation_table(frame, args.metric)}
    for name, table in tables.items():
        if table is None:
            continue
        for suffix, text in (("md", to_markdown(table)), ("tex", to_latex(table)), ("csv", to_csv(table))):
            write_text_atomically(args.out / f"{name}.{suffix}", text + ("\n" if suffix != "csv" else ""))
        print(to_markdown(table) + "\n")
    figures = [*routing_heatmaps(frame, args.out), *cross_expert_matrices(frame, args.out)]
    figures += parameter_curves(frame, args.out, args.metric)
    print(f"wrote {len([t for t in tables.values() if t])} tables and {len(figures)} figures to {args.out}")
    return 0
