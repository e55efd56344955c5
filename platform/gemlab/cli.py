"""The ``gemlab`` command.

    gemlab plan ...        plan tasks onto experts (see ``gemlab plan --help``)
    gemlab data ...        generate domains, inspect collections on disk
    gemlab train ...       train an experiment on Ray Train (Hydra overrides)
    gemlab eval RUN ...    evaluate a trained run's newest checkpoint on a split (optionally through one expert)
    gemlab sweep ...       a Ray Tune search, each trial a training run
    gemlab report ...      tables and figures from results.parquet files
    gemlab submit ...      run train or sweep on a Ray cluster (Ray Jobs)
    gemlab jobs ...        list, status, logs, stop
    gemlab bench plan ...  planner speed and quality, side by side
    gemlab bench data ...  images/s for generating and loading domains
    gemlab bench moe ...   MoE layers' forward+backward time relative to a dense FFN
    gemlab bench train ... GEM expert-parallel vs top-1 data-parallel samples/s on Ray
    gemlab bench detect ... training images/s of Mixed-DINO, DINO-MoE, GEM-DINO and GEMGR-DINO
    gemlab bench sweep ... Tune's overhead per trial against a plain loop
    gemlab bench broadcast ... a class-level plan's object-store size and time to reach every worker

Each subcommand is a module with ``add_arguments(parser)`` and ``run(args)``;
those modules import torch or Ray only inside ``run``, so building the parser
stays cheap and ``gemlab plan`` never pays for them. An expected failure that
a subcommand raises (any :class:`~gemlab.errors.GemlabError`, or an
``OSError`` such as a missing file or an unreachable store) ends here in one
line, ``gemlab <command>: error: <what>``, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

import gemlab
from gemlab.bench import broadcast as broadcast_bench
from gemlab.bench import data as data_bench
from gemlab.bench import detect as detect_bench
from gemlab.bench import moe as moe_bench
from gemlab.bench import plan as plan_bench
from gemlab.bench import sweep as sweep_bench
from gemlab.bench import train as train_bench
from gemlab.data import command as data_command
from gemlab.engine import command as train_command
from gemlab.engine import evaluation_command as eval_command
from gemlab.errors import GemlabError, user_message
from gemlab.jobs import jobs_command, submit_command
from gemlab.plan import command as plan_command
from gemlab.report import command as report_command
from gemlab.tune import command as sweep_command


def _add(commands: argparse._SubParsersAction, name: str, module: ModuleType, help_text: str) -> None:
    parser = commands.add_parser(
        name, help=help_text, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.add_arguments(parser)
    parser.set_defaults(run=module.run, prog=parser.prog)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemlab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"gemlab {gemlab.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add(commands, "plan", plan_command, "plan tasks (datasets, classes) onto experts")
    _add(commands, "data", data_command, "generate domains and inspect collections")
    _add(commands, "train", train_command, "train an experiment on Ray (expert-parallel for planned routers)")
    _add(commands, "eval", eval_command, "evaluate a trained run's checkpoint on a split, or through one expert")
    _add(commands, "sweep", sweep_command, "a search over config keys on Ray Tune, each trial a training run")
    _add(commands, "report", report_command, "tables (Markdown, LaTeX, CSV) and figures from results files")
    _add(commands, "submit", submit_command, "run gemlab train or sweep on a Ray cluster as a job")
    _add(commands, "jobs", jobs_command, "list, inspect, follow and stop a cluster's jobs")
    benchmarks = commands.add_parser("bench", help="benchmarks that print side-by-side ratios")
    targets = benchmarks.add_subparsers(dest="target", required=True)
    _add(targets, "plan", plan_bench, "planner speed and quality vs direct LP / scipy / MIP")
    _add(targets, "data", data_bench, "images/s for generating and loading domains")
    _add(targets, "moe", moe_bench, "forward+backward time of MoE layers vs a dense FFN")
    _add(targets, "train", train_bench, "GEM expert-parallel vs top-1 data-parallel training on Ray")
    _add(targets, "detect", detect_bench, "training images/s of the DINO variants at equal active parameters")
    _add(targets, "sweep", sweep_bench, "a Tune sweep's wall time vs the same trials in a plain loop")
    _add(targets, "broadcast", broadcast_bench, "object-store size of a class-level plan and time to reach workers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (GemlabError, OSError) as error:
        print(f"{args.prog}: error: {user_message(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
