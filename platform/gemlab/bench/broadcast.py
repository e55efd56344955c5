"""``gemlab bench broadcast``: what putting a class-level plan in Ray's object store costs.

The engine ``ray.put``s ``{"plan": Plan, "table": ...}`` once and every
worker ``ray.get``s it. This builds the GEM plan of ``gemlab bench plan``'s
largest instance (18,291 classes on 32 experts), reports its serialized
size in the object store (beside its canonical JSON), and times ``put``
plus the gets of ``--workers`` actors, started beforehand so that process
start-up is not counted. Medians over ``--repeats``. On one machine the
object store is shared memory; across nodes each node fetches the object
once over the network.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=18291)
    parser.add_argument("--experts", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)


def run(args: argparse.Namespace) -> int:
    from gemlab.engine.api import ensure_ray
    from gemlab.plan.planner import make_plan
    from gemlab.plan.problem import AssignmentProblem
    from gemlab.plan.synthetic import random_affinity

    costs = random_affinity(args.tasks, args.experts, seed=0)
    capacity = math.ceil(1.1 * args.tasks / args.experts)
    plan = make_plan(AssignmentProblem.count(costs, capacity), "gem")
    payload = {"plan": plan, "table": tuple(plan.assignment.tolist())}
    ensure_ray(None, verbose=False)
    import ray  # after ensure_ray: the local Ray's loopback binding is read when ray is first imported

    serialized = ray._private.worker.global_worker.get_serialization_context().serialize(payload)

    @ray.remote(num_cpus=0)
    class Receiver:
        def receive(self, shared) -> float:  # the ObjectRef arrives resolved: the object is here
            return time.time() if shared["plan"].num_tasks else 0.0

        def ready(self) -> bool:
            return True

    receivers = [Receiver.remote() for _ in range(args.workers)]
    ray.get([r.ready.remote() for r in receivers])
    puts, alls = [], []
    for _ in range(args.repeats):
        started = time.time()
        ref = ray.put(payload)
        puts.append(time.time() - started)
        arrivals = ray.get([r.receive.remote(ref) for r in receivers])
        alls.append(max(arrivals) - started)
        del ref
    print(f"class-level plan: {args.tasks:,} tasks on {args.experts} experts, {args.workers} receiving workers")
    print("| | size | median time |")
    print("|---|---:|---:|")
    print(f"| canonical JSON (plan.json) | {len(plan.to_json()) / 1e6:.1f} MB | |")
    size, put = serialized.total_bytes / 1e6, 1000 * statistics.median(puts)
    print(f"| object-store payload | {size:.1f} MB | put {put:.0f} ms |")
    print(f"| put + every worker holding it | | {1000 * statistics.median(alls):.0f} ms |")
    return 0
