"""``gemlab bench train``: GEM expert-parallel against top-1 data-parallel, same workers, same run.

Both train ``experiment=bench_train`` (experts hold most of the parameters)
on the same Ray workers, with equal activated parameters: GEM runs one
expert per sample, top-1 one per token with capacity for every token (at
the usual capacity factor 1.25 top-1 drops most tokens early in training and
so computes less, which would flatter it). The two runs alternate, ``--repeats`` times each, and the table
gives medians: samples/s over the steady-state windows (every evaluation
window after the first), worker CPU milliseconds per sample (all threads of
all workers; on a shared machine wall time also counts waiting for a core),
bytes each step all-reduces (summed over workers), and the time from launch
to the end of the first step. Run with OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="runs of each router, alternating")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides for both runs")


def _one_run(router: str, repeat: int, storage: str, args: argparse.Namespace) -> dict[str, float]:
    from gemlab.engine.api import compose_config, prepare, train

    started = time.perf_counter()
    overrides = [
        "experiment=bench_train",
        f"router={router}",
        f"trainer.max_steps={args.steps}",
        f"trainer.eval_interval={max(1, args.steps // 3)}",
        f"trainer.num_workers={args.workers}",
        f"storage_path={storage}",
        f"name=bench-{router}-{repeat}",
        *args.overrides,
    ]
    if router == "topk":  # capacity for every token: top-1 computes exactly what GEM does, no drops
        overrides.append(f"router.capacity_factor={float(compose_config(overrides).moe.num_experts)}")
    prepared = prepare(compose_config(overrides))
    prepare_seconds = time.perf_counter() - started
    result = train(prepared, lambda event: None)
    steady = result.history[1:] or result.history
    return {
        "samples_per_s": statistics.median(r["samples_per_s"] for r in steady),
        "cpu_ms_per_sample": statistics.median(r["cpu_ms_per_sample"] for r in steady),
        "allreduce_mb_per_step": result.history[-1]["allreduce_bytes_per_step"] / 1e6,
        "first_step_s": prepare_seconds + (result.first_step_seconds or float("nan")),
    }


def run(args: argparse.Namespace) -> int:
    from gemlab.engine.api import ensure_ray

    started = time.perf_counter()
    ensure_ray(None, verbose=False)
    ray_seconds = time.perf_counter() - started
    runs: dict[str, list[dict[str, float]]] = {"gem": [], "topk": []}
    with tempfile.TemporaryDirectory(prefix="gemlab-bench-train-") as storage:
        for repeat in range(args.repeats):
            order = ["gem", "topk"] if repeat % 2 == 0 else ["topk", "gem"]
            for router in order:
                runs[router].append(_one_run(router, repeat, storage, args))
                print(f"repeat {repeat} {router}: {runs[router][-1]['samples_per_s']:,.0f} samples/s", flush=True)
    keys = ("samples_per_s", "cpu_ms_per_sample", "allreduce_mb_per_step", "first_step_s")
    medians = {router: {k: statistics.median(r[k] for r in rs) for k in keys} for router, rs in runs.items()}
    pair_ratios = [g["samples_per_s"] / t["samples_per_s"] for g, t in zip(runs["gem"], runs["topk"], strict=True)]
    cpu_ratios = [
        t["cpu_ms_per_sample"] / g["cpu_ms_per_sample"] for g, t in zip(runs["gem"], runs["topk"], strict=True)
    ]
    print(f"\nRay start-up: {ray_seconds:.1f} s; {args.workers} workers, {args.steps} steps, {args.repeats} runs each")
    print("| run | samples/s | worker CPU ms/sample | all-reduced MB/step | launch to first step (s) |")
    print("|---|---:|---:|---:|---:|")
    for label, router in (("GEM expert-parallel", "gem"), ("top-1 data-parallel", "topk")):
        m = medians[router]
        print(
            f"| {label} | {m['samples_per_s']:,.0f} | {m['cpu_ms_per_sample']:.2f} | "
            f"{m['allreduce_mb_per_step']:.2f} | {m['first_step_s']:.1f} |"
        )
    print(
        f"\nGEM / top-1 samples/s: median of paired ratios {statistics.median(pair_ratios):.2f} "
        f"(runs: {', '.join(f'{r:.2f}' for r in pair_ratios)}); CPU per sample, top-1 / GEM: "
        f"{statistics.median(cpu_ratios):.2f}"
    )
    return 0
