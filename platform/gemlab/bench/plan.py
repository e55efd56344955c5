"""``gemlab bench plan``: the planner's speed and quality, side by side in one run.

Count mode, per instance size: GEM (column-generated LP on HiGHS + rounding)
against the direct HiGHS LP over all N x E variables and against
``scipy.optimize.linprog(method="highs")``, interleaved repeat by repeat so
that machine load hits all three alike; medians of wall and CPU time. Values
are compared with the LP bound and with the exact MIP optimum where the MIP
finishes within ``--mip-time-limit``.

Load mode (generalized assignment, 100 x 16, heavy-tailed loads, capacity
slack 1.1 and 1.25): GEM's value against the MIP optimum, its capacity
violations, and the same for greedy and for the paper's rounding without the
repair step.

Run with OMP_WAIT_POLICY=PASSIVE so that idle threads do not spin on a
shared machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from gemlab.plan.exact import solve_mip
from gemlab.plan.lp import solve_relaxation
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import AssignmentProblem
from gemlab.plan.rounding import bit_scaling_round
from gemlab.plan.synthetic import heavy_tailed_loads, load_capacity, random_affinity

DEFAULT_SIZES = ("12x8", "100x16", "1203x64", "18291x32")
_SLACKS = (1.1, 1.25)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="NxE count-mode instances")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per instance (medians)")
    parser.add_argument("--mip-time-limit", type=float, default=30.0, help="seconds for each exact MIP")
    parser.add_argument("--load-seeds", type=int, default=8, help="load-mode instances per capacity slack")
    parser.add_argument("--seed", type=int, default=0)


def count_instance(n: int, e: int, seed: int) -> AssignmentProblem:
    """Random affinities; capacity 2 at the paper's 12x8, else ceil(1.1 N / E) per expert."""
    capacity = 2 if (n, e) == (12, 8) else math.ceil(1.1 * n / e)
    return AssignmentProblem.count(random_affinity(n, e, seed), capacity)


def scipy_lp_value(problem: AssignmentProblem) -> float:
    """The same LP through scipy's HiGHS wrapper (dense-free sparse matrices)."""
    n, e = problem.costs.shape
    columns = np.arange(n * e)
    tasks = np.repeat(np.arange(n), e)
    experts = np.tile(np.arange(e), n)
    a_eq = sparse.csr_array((np.ones(n * e), (tasks, columns)), shape=(n, n * e))
    a_ub = sparse.csr_array((problem.loads[tasks], (experts, columns)), shape=(e, n * e))
    result = linprog(
        -problem.costs.ravel(),
        A_ub=a_ub,
        b_ub=problem.capacity,
        A_eq=a_eq,
        b_eq=np.ones(n),
        bounds=(0, 1),
        method="highs",
    )
    return -float(result.fun)


def _timed(function: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def bench_count(size: str, repeats: int, mip_time_limit: float, seed: int) -> dict:
    n, e = (int(part) for part in size.lower().split("x"))
    problem = count_instance(n, e, seed)
    runners = {
        "gem": lambda: make_plan(problem, "gem", with_bound=False),
        "highs_full_lp": lambda: solve_relaxation(problem, method="full"),
        "scipy_linprog": lambda: scipy_lp_value(problem),
    }
    wall = {name: [] for name in runners}
    cpu = {name: [] for name in runners}
    results = {}
    for _ in range(repeats):
        for name, runner in runners.items():
            results[name], seconds, cpu_seconds = _timed(runner)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    plan, full_lp = results["gem"], results["highs_full_lp"]
    mip = solve_mip(problem, time_limit=mip_time_limit)
    return {
        "size": f"{n}x{e}",
        "capacity": int(problem.capacity[0]),
        "wall": {k: _median(v) for k, v in wall.items()},
        "cpu": {k: _median(v) for k, v in cpu.items()},
        "gem_lp": plan.timings["lp"],
        "gem_compile": plan.timings["strategy"] - plan.timings["lp"],
        "lp_bound": full_lp.value,
        "scipy_value": results["scipy_linprog"],
        "gem_value": plan.value,
        "mip": mip,
    }


def bench_load(seeds: int, mip_time_limit: float) -> list[dict]:
    rows = []
    for slack in _SLACKS:
        for seed in range(seeds):
            costs = random_affinity(100, 16, seed)
            loads = heavy_tailed_loads(100, seed)
            problem = AssignmentProblem.load(costs, loads, load_capacity(loads, 16, slack))
            mip = solve_mip(problem, time_limit=mip_time_limit)
            gem, gem_wall, _ = _timed(lambda p=problem: make_plan(p, "gem", with_bound=False))
            greedy = make_plan(problem, "greedy", with_bound=False)
            rounded = bit_scaling_round(problem, solve_relaxation(problem).x, precision=8)
            rows.append(
                {
                    "slack": slack,
                    "seed": seed,
                    "mip": mip,
                    "gem": gem,
                    "greedy": greedy,
                    "gem_wall": gem_wall,
                    "rounding_stranded": int(np.count_nonzero(rounded.assignment < 0)),
                }
            )
    return rows


def _print_count(rows: list[dict]) -> None:
    print("count mode: GEM (column generation + rounding) vs the direct LP, medians, wall / CPU seconds")
    print(
        f"{'size':>9} {'cap':>5} | {'gem':>15} {'(lp+compile)':>17} | {'HiGHS full LP':>15} {'x':>7} | "
        f"{'scipy linprog':>15} {'x':>7} | {'gem/LP':>8} {'gem/MIP':>10} {'MIP':>15}"
    )
    for row in rows:
        w, c = row["wall"], row["cpu"]
        mip = row["mip"]
        mip_ratio = f"{row['gem_value'] / mip.value:.6f}" if mip.assignment is not None and mip.optimal else "-"
        mip_text = f"{'optimal' if mip.optimal else 'no proof'} {mip.seconds:.1f}s"
        print(
            f"{row['size']:>9} {row['capacity']:>5} | {w['gem']:7.4f}/{c['gem']:7.4f} "
            f"({row['gem_lp']:.4f}+{row['gem_compile']:.4f}) | "
            f"{w['highs_full_lp']:7.4f}/{c['highs_full_lp']:7.4f} {w['highs_full_lp'] / w['gem']:6.1f}x | "
            f"{w['scipy_linprog']:7.4f}/{c['scipy_linprog']:7.4f} {w['scipy_linprog'] / w['gem']:6.1f}x | "
            f"{row['gem_value'] / row['lp_bound']:8.6f} {mip_ratio:>10} {mip_text:>15}"
        )
    print(
        "  x = direct solver wall time / GEM wall time; gem/LP = 1 means certified optimal "
        "(the count-mode LP is integral)"
    )


def _print_load(rows: list[dict]) -> None:
    print("\nload mode (100x16, heavy-tailed loads): value / MIP optimum and capacity violations")
    solved = [r for r in rows if r["mip"].assignment is not None and r["mip"].optimal]
    for name in ("gem", "greedy"):
        ratios = [r[name].value / r["mip"].value for r in solved]
        violated = sum(bool(r[name].violations) for r in rows)
        print(
            f"  {name:<7} instances {len(rows)}, MIP optimal on {len(solved)}: value/MIP min {min(ratios):.5f} "
            f"median {statistics.median(ratios):.5f}; instances with overloaded experts: {violated}"
        )
    stranded = sum(r["rounding_stranded"] > 0 for r in rows)
    print(f"  rounding without repair left tasks with no room on {stranded} of {len(rows)} instances")
    print(
        f"  gem wall time median {statistics.median(r['gem_wall'] for r in rows):.4f} s, "
        f"max {max(r['gem_wall'] for r in rows):.4f} s"
    )


def run(args: argparse.Namespace) -> int:
    rows = [bench_count(size, args.repeats, args.mip_time_limit, args.seed) for size in args.sizes]
    _print_count(rows)
    if args.load_seeds > 0:
        _print_load(bench_load(args.load_seeds, args.mip_time_limit))
    return 0
