"""``gemlab plan``: build a plan from a cost file, a scenario or a synthetic instance.

    gemlab plan costs.csv --capacity 2 --out plan.json
    gemlab plan --scenario uodb12 --compare argmax expert_centric
    gemlab plan --synthetic 1203 64 --seed 0 --loads heavy-tailed --load-capacity 1.2x
    gemlab plan --show runs/<run>/plan.json

Prints the mapping table, the LP bound, the value and their ratio, and for a
fractional LP plan the tasks it split with what the compiler did with them;
with ``--out`` writes the plan's canonical JSON (atomically: nothing on
error). ``--show`` prints a saved plan (a training run's ``plan.json``) the
same way, solving nothing.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from gemlab.files import check_file_destination
from gemlab.plan.affinity import CostMatrix, load_cost_matrix
from gemlab.plan.errors import PlanInputError
from gemlab.plan.loads import read_loads
from gemlab.plan.plan import Plan
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.scenario import load_scenario
from gemlab.plan.strategies import STRATEGIES, StrategyOptions, validate_options
from gemlab.plan.synthetic import heavy_tailed_loads, random_affinity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "costs",
        nargs="?",
        help="cost matrix with names: .csv, .parquet, .npz, or .npy + .names.json",
    )
    source.add_argument("--synthetic", nargs=2, type=int, metavar=("N", "E"), help="random N x E instance")
    source.add_argument("--scenario", help="a scenario under experiments/planner/ (e.g. uodb12) or a YAML path")
    source.add_argument("--show", type=Path, metavar="PLAN", help="print a saved plan (a run's plan.json); no solve")
    parser.add_argument("--seed", type=int, default=0, help="seed of --synthetic and of the random strategy")
    parser.add_argument("--strategy", default="gem", choices=sorted(STRATEGIES))
    parser.add_argument("--capacity", help="count mode: tasks per expert, one integer or one per expert (a,b,...)")
    parser.add_argument(
        "--loads",
        help="load mode: CSV/JSON of task loads, 'heavy-tailed' (synthetic) or 'scenario'",
    )
    parser.add_argument("--load-capacity", help="load mode: capacity per expert, a number or 'Sx' = S x fair share")
    parser.add_argument("--precision", type=int, default=8, help="rounding precision p in 1..30 (gem)")
    parser.add_argument(
        "--no-repair",
        action="store_true",
        help="gem: keep the compiler's rounded plan, without re-solving one below the LP bound",
    )
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds for any MIP solve")
    parser.add_argument(
        "--compare",
        nargs="*",
        default=[],
        choices=sorted(STRATEGIES),
        metavar="STRATEGY",
        help="also run these strategies and print one summary line each",
    )
    parser.add_argument("--out", type=Path, help="write the plan JSON here")


def _parse_capacity(text: str) -> int | list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise PlanInputError(f"--capacity: expected integers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _read_loads(spec: str, names: tuple[str, ...], seed: int, scenario_images: np.ndarray | None) -> np.ndarray:
    if spec == "heavy-tailed":
        return heavy_tailed_loads(len(names), seed)
    if spec == "scenario":
        if scenario_images is None:
            raise PlanInputError("--loads scenario: only valid together with --scenario")
        return scenario_images
    if not Path(spec).exists():
        raise PlanInputError(
            f"{spec}: no such loads file (--loads takes a .csv or .json file, heavy-tailed or scenario)"
        )
    return read_loads(spec, names)


def _load_capacity(spec: str, loads: np.ndarray, num_experts: int) -> float:
    try:
        if spec.endswith("x"):
            return float(spec[:-1]) * loads.sum() / num_experts
        return float(spec)
    except ValueError:
        raise PlanInputError(f"--load-capacity: expected a number or 'Sx', got {spec!r}") from None


def build_problem(args: argparse.Namespace) -> AssignmentProblem:
    """The problem the arguments describe; raises PlanError for bad or infeasible input."""
    images, capacity = None, None
    if args.scenario:
        scenario = load_scenario(args.scenario)
        matrix, capacity, images = scenario.affinity, scenario.capacity, scenario.images
    elif args.synthetic:
        n, e = args.synthetic
        if n < 1 or e < 1:
            raise PlanInputError(f"--synthetic: N and E must be >= 1, got {n} {e}")
        matrix = CostMatrix(
            random_affinity(n, e, args.seed),
            tuple(f"task{i}" for i in range(n)),
            tuple(f"expert{j}" for j in range(e)),
        )
    else:
        matrix = load_cost_matrix(args.costs)
    names = (matrix.task_names, matrix.expert_names)
    if args.loads:
        if args.capacity:
            raise PlanInputError("--capacity is for count mode; with --loads give --load-capacity")
        loads = _read_loads(args.loads, matrix.task_names, args.seed, images)
        cap = _load_capacity(args.load_capacity or "1.1x", loads, len(matrix.expert_names))
        return AssignmentProblem.load(matrix.costs, loads, cap, *names)
    if args.load_capacity:
        raise PlanInputError("--load-capacity needs --loads")
    if args.capacity:
        capacity = _parse_capacity(args.capacity)
    elif capacity is None:
        capacity = math.ceil(len(matrix.task_names) / len(matrix.expert_names))
    return AssignmentProblem.count(matrix.costs, capacity, *names)


def _summary(plan) -> str:
    ratio = "n/a" if plan.ratio is None else f"{plan.ratio:.6f}"
    over = plan.violations
    return f"{plan.strategy:<15} value {plan.value:10.6g}  value/LP {ratio}  overloaded experts {len(over)}" + (
        f" ({', '.join(over)})" if over else ""
    )


def run(args: argparse.Namespace) -> int:
    """Plan, print, and write ``--out``.

    Every input and the destination are checked before the first solve,
    which can take minutes. A PlanError or OSError (one line, naming the file
    or option) reaches ``gemlab``'s main, which prints it and exits 2.
    """
    if args.show:
        return show(args)
    options = StrategyOptions(
        precision=args.precision, repair=not args.no_repair, seed=args.seed, time_limit=args.time_limit
    )
    options = validate_options(options)
    problem = build_problem(args)
    if args.out:
        check_file_destination(args.out)
    plan = make_plan(problem, args.strategy, options)
    print(plan.explain())
    timings = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in plan.timings.items())
    print(f"\ntimings: {timings}")
    if args.compare:
        print("\ncompared on the same problem:")
        print(_summary(plan))
        for strategy in args.compare:
            print(_summary(make_plan(problem, strategy, options)))
    if args.out:
        plan.save(args.out)
        print(f"\nwrote {args.out}")
    return 0


_SHAPING_OPTIONS = ("capacity", "loads", "load_capacity", "compare", "out")  # what --show refuses


def show(args: argparse.Namespace) -> int:
    """Print the saved plan ``--show`` names; raises PlanInputError naming the file or an option it cannot take.

    A saved plan is only read, so the options that shape or write a plan are refused rather than ignored.
    """
    given = [f"--{name.replace('_', '-')}" for name in _SHAPING_OPTIONS if getattr(args, name)]
    if given:
        raise PlanInputError(f"--show prints a saved plan; it takes no {', '.join(given)}")
    print(Plan.load(args.show).explain())
    return 0
