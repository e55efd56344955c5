"""The ``gemlab`` command.

    gemlab plan ...        plan tasks onto experts (see ``gemlab plan --help``)
    gemlab data ...        generate domains, inspect collections on disk
    gemlab bench plan ...  planner speed and quality, side by side
    gemlab bench data ...  images/s for generating and loading domains

Subcommands import their modules lazily, so ``gemlab plan`` never pays for
torch or Ray.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemlab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    from gemlab.plan import command as plan_command

    plan = commands.add_parser(
        "plan",
        help="plan tasks (datasets, classes) onto experts",
        description=plan_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plan_command.add_arguments(plan)
    plan.set_defaults(run=plan_command.run)

    from gemlab.data import command as data_command

    data = commands.add_parser(
        "data",
        help="generate domains and inspect collections",
        description=data_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_command.add_arguments(data)
    data.set_defaults(run=data_command.run)

    from gemlab.bench import plan as plan_bench

    bench = commands.add_parser("bench", help="benchmarks that print side-by-side ratios")
    targets = bench.add_subparsers(dest="target", required=True)
    bench_plan = targets.add_parser(
        "plan",
        help="planner speed and quality vs direct LP / scipy / MIP",
        description=plan_bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plan_bench.add_arguments(bench_plan)
    bench_plan.set_defaults(run=plan_bench.run)

    from gemlab.bench import data as data_bench

    bench_data = targets.add_parser(
        "data",
        help="images/s for generating and loading domains",
        description=data_bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_bench.add_arguments(bench_data)
    bench_data.set_defaults(run=data_bench.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
