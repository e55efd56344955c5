"""``gemlab bench detect``: training images/s of the DINO variants, side by side, at equal active parameters.

Four detectors train ``experiment=uodb_mini`` on the same synth-uodb:
Mixed-DINO (dense), DINO-MoE (top-2, balance loss), GEM-DINO and
GEMGR-DINO. Each case is the very step a training worker runs
(:class:`gemlab.engine.worker.Worker`: sample, forward, set loss,
backward, optimizer step), by default in one process holding every expert,
so that every model trains on the *same batches* (GEM's sorted by expert,
as its workers deliver them). That matters more than it seems: a step's
cost grows with the largest object count in its batch (every object adds
denoising queries), and the domains differ by 5x in objects per image, so
``--workers 2`` -- rank 0 of two, GEM sampling only its experts' domains --
compares models on different data. Active parameters are equal: GEM runs
one expert FFN of the dense width per query, and top-2 runs two experts of
half that width.

The cases step round robin, one step each per round, the order rotating,
so machine load hits them alike; the table gives medians of wall time and
of the process's CPU time per image (``time.process_time``: every thread),
and both relative to Mixed-DINO. Run with OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

CASES = {  # label -> (overrides of experiment=uodb_mini, experts a token runs); {half}: half the dense FFN width
    "Mixed-DINO": (["model=dino"], 1),
    "DINO-MoE top-2": (["model=gem_dino", "router=topk", "router.k=2", "model.expert_hidden={half}"], 2),
    "GEM-DINO": (["model=gem_dino", "router=gem"], 1),
    "GEMGR-DINO": (["model=gemgr_dino", "router=gem"], 1),
}
BASELINE = "Mixed-DINO"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help="a synth-uodb folder (default: generated, temporary)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per case (decoding, allocator)")
    parser.add_argument(
        "--workers", type=int, default=1, help="the world size whose rank 0 is measured (1: the same batches for all)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker has one core)")
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides for every case")


def _worker(overrides: list[str], experts_per_token: int, data: Path, storage: str, workers: int):
    """Rank 0's worker of the configured run, and the full model's parameter counts."""
    from gemlab.engine.config import as_plain, compose_config
    from gemlab.engine.model import build_model
    from gemlab.engine.prepare import prepare
    from gemlab.engine.worker import Worker
    from gemlab.models.detection.params import parameter_counts

    cfg = compose_config(
        ["experiment=uodb_mini", "data.source=collection", f"data.path={data}", f"storage_path={storage}", *overrides]
    )
    prepared = prepare(cfg)
    plain = as_plain(prepared.cfg)
    counts = parameter_counts(build_model(plain, prepared.mixture, prepared.plan), experts_per_token)
    return Worker(plain, prepared.plan, prepared.table, 0, workers), counts


def run(args: argparse.Namespace) -> int:
    import torch

    from gemlab.data.synth.uodb import generate_synth_uodb
    from gemlab.engine.config import compose_config

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="gemlab-bench-detect-") as scratch:
        data = args.data
        if data is None:
            image_size = compose_config(["experiment=uodb_mini", *args.overrides]).data.image_size
            data = generate_synth_uodb(Path(scratch) / "synth-uodb", seed=0, image_size=image_size).parent
        half = compose_config(["experiment=uodb_mini", *args.overrides]).model.hidden // 2
        workers, counts = {}, {}
        for label, (overrides, per_token) in CASES.items():
            case = [o.format(half=half) for o in overrides] + list(args.overrides)
            workers[label], counts[label] = _worker(case, per_token, data, str(Path(scratch) / "runs"), args.workers)
        batch = next(iter(workers.values())).cfg["trainer"]["batch_size"]
        wall: dict[str, list[float]] = {label: [] for label in workers}
        cpu: dict[str, list[float]] = {label: [] for label in workers}
        for step in range(1, args.warmup + 1):
            for worker in workers.values():
                worker.step(step)
        labels = list(workers)
        for round_number in range(args.rounds):
            step = args.warmup + 1 + round_number
            for label in labels[round_number % len(labels) :] + labels[: round_number % len(labels)]:
                started_wall, started_cpu = time.perf_counter(), time.process_time()
                workers[label].step(step)
                wall[label].append((time.perf_counter() - started_wall) / batch)
                cpu[label].append((time.process_time() - started_cpu) / batch)
    base_wall, base_cpu = statistics.median(wall[BASELINE]), statistics.median(cpu[BASELINE])
    print(
        f"experiment=uodb_mini {' '.join(args.overrides)}: rank 0 of {args.workers}, batch {batch}, "
        f"{args.threads} thread(s), median of {args.rounds} interleaved rounds"
    )
    print(
        f"  {'model':<16} {'params':>10} {'active':>10} {'images/s':>9} {'x mixed':>8} "
        f"{'CPU ms/image':>13} {'x mixed':>8}"
    )
    for label in workers:
        w, c = statistics.median(wall[label]), statistics.median(cpu[label])
        print(
            f"  {label:<16} {counts[label]['total']:>10,} {counts[label]['active']:>10,} {1 / w:9.1f} "
            f"{base_wall / w:8.2f} {c * 1e3:13.1f} {base_cpu / c:8.2f}"
        )
    return 0
