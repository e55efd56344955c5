"""``gemlab bench moe``: forward + backward time of MoE layers relative to a dense FFN.

The baseline is one FFN (d -> h -> d) run by the very kernels the experts
use, so a ratio measures routing, dispatch and combine, not a different
matmul layout; ``torch.nn.Linear``'s FFN is listed beside it. Every layer
has the same *active* size as the baseline: top-1 and GEM run one expert per token, top-2 two, and Soft
MoE gets one slot per token overall (FLOP-matched: E experts x S slots x B
sequences = tokens). The layers are timed round robin, one step each per
round, so machine load hits all of them alike; the table gives medians of
wall time and of the main thread's CPU time (``time.thread_time``), and both
relative to the dense FFN. The order rotates from round to round. Run with
OMP_WAIT_POLICY=PASSIVE.

GEM is measured twice: a batch from one domain (one expert, no gather), and
a mixed batch whose samples come from every domain, sorted by expert as the
expert-parallel loader delivers them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--sequence", type=int, default=256, help="tokens per sample (B = tokens / sequence)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)


def _cases(args: argparse.Namespace, tokens: int) -> dict[str, Callable[[], None]]:
    import torch

    from gemlab.moe.experts import Experts
    from gemlab.moe.layer import MoELayer
    from gemlab.moe.routers.gem import GEMRouter
    from gemlab.moe.routers.sinkhorn import SinkhornRouter
    from gemlab.moe.routers.soft import SoftMoERouter
    from gemlab.moe.routers.topk import TopKRouter

    d, h, e = args.dim, args.hidden, args.experts
    batch = tokens // args.sequence
    x = torch.randn(batch, args.sequence, d)
    dense = Experts(1, d, h)  # the baseline: one FFN with exactly the experts' kernels
    linear = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Linear(h, d))

    def layer(router):
        return MoELayer(router=router, experts=Experts(e, d, h))

    gem = layer(GEMRouter(list(range(e)), e))
    one_domain = torch.zeros(batch, dtype=torch.long)
    mixed = torch.arange(batch) * e // batch  # every domain, samples sorted by expert
    layers = {
        "top-1": (layer(TopKRouter(d, e, k=1, capacity_factor=1.25)), {}),
        "top-2": (layer(TopKRouter(d, e, k=2, capacity_factor=1.25)), {}),
        "sinkhorn top-1": (layer(SinkhornRouter(d, e)), {}),
        "soft (FLOP-matched)": (layer(SoftMoERouter(d, e, slots_per_expert=max(1, args.sequence // e))), {}),
        "gem, one domain": (gem, {"domain": one_domain}),
        "gem, mixed batch": (gem, {"domain": mixed}),
    }

    flat = x.reshape(-1, d)

    # Each step starts with cleared gradients, as a training step does after zero_grad(set_to_none=True).
    def dense_step():
        dense.zero_grad(set_to_none=True)
        dense(flat, [flat.shape[0]]).sum().backward()

    def linear_step():
        linear.zero_grad(set_to_none=True)
        linear(x).sum().backward()

    def moe_step(module, kwargs):
        module.zero_grad(set_to_none=True)
        y, routing = module(x, **kwargs)
        (y.sum() + sum(routing.aux_losses.values(), torch.zeros(()))).backward()

    cases = {"dense FFN": dense_step, "dense FFN (nn.Linear)": linear_step}
    cases.update({name: (lambda m=m, kw=kw: moe_step(m, kw)) for name, (m, kw) in layers.items()})
    return cases


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for tokens in args.tokens:
        cases = _cases(args, tokens)
        wall: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for step in cases.values():  # warm-up: allocator and kernels
            step()
        names = list(cases)
        for round_number in range(args.rounds):
            # rotate the order each round, so no layer always runs right after the same one
            for name in names[round_number % len(names) :] + names[: round_number % len(names)]:
                step = cases[name]
                start_wall, start_cpu = time.perf_counter(), time.thread_time()
                step()
                wall[name].append(time.perf_counter() - start_wall)
                cpu[name].append(time.thread_time() - start_cpu)
        base_wall, base_cpu = statistics.median(wall["dense FFN"]), statistics.median(cpu["dense FFN"])
        print(
            f"T={tokens} tokens, d={args.dim}, h={args.hidden}, E={args.experts}, {args.threads} threads, "
            f"median of {args.rounds} interleaved rounds"
        )
        print(f"  {'layer':<22} {'wall ms':>9} {'x dense':>8} {'main-thread CPU ms':>19} {'x dense':>8}")
        for name in cases:
            w, c = statistics.median(wall[name]), statistics.median(cpu[name])
            print(f"  {name:<22} {w * 1e3:9.1f} {w / base_wall:8.2f} {c * 1e3:19.1f} {c / base_cpu:8.2f}")
    return 0
