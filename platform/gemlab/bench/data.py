"""``gemlab bench data``: images per second for generating and for loading batches.

Generation: ``synth-uodb`` at ``--scale`` into a temporary folder, with 1 and
with 2 worker processes, interleaved over ``--repeats``. Loading: batches of
``--batch-size`` from the generated train splits through the mixture
sampler, the lazy torchvision.io decoding and the v2 detection transforms,
with a DataLoader of 0 and of 2 worker processes, interleaved. CPU time
includes child processes (``RUSAGE_CHILDREN``), so a wall-clock gain from
more processes can be told apart from a machine that was simply idle.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float, default=0.25, help="synth-uodb scale to generate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=10, help="batches per loading measurement")


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _measure(function: Callable[[], int]) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), _cpu()
    count = function()
    return time.perf_counter() - wall, _cpu() - cpu, count


def _collate(batch):
    return batch  # detection targets differ in length: keep the list


def run(args: argparse.Namespace) -> int:
    import torch  # here, not at module level: the CLI imports this module to build its parser

    from gemlab.data.collection import load_collection
    from gemlab.data.dataset import MixtureDataset
    from gemlab.data.sampler import MixtureSampler
    from gemlab.data.synth.uodb import generate_synth_uodb
    from gemlab.data.transforms import detection_transforms

    root = Path(tempfile.mkdtemp(prefix="gemlab-bench-data-"))
    try:
        generation = {1: [], 2: []}
        for repeat in range(args.repeats):
            for workers in (1, 2):
                out = root / f"gen-{repeat}-{workers}"

                def generate(out=out, workers=workers) -> int:
                    generate_synth_uodb(out, scale=args.scale, workers=workers)
                    return sum(1 for _ in out.rglob("*.png"))

                generation[workers].append(_measure(generate))
        mixture, _ = load_collection(root / "gen-0-1")
        dataset = MixtureDataset(mixture, transform=detection_transforms(128, train=True))
        sampler = MixtureSampler(mixture, batch_size=args.batch_size, seed=0)
        loading = {0: [], 2: []}
        for _ in range(args.repeats):
            for workers in (0, 2):
                loader = torch.utils.data.DataLoader(
                    dataset,
                    batch_sampler=[sampler.batch(s) for s in range(args.batches)],
                    num_workers=workers,
                    collate_fn=_collate,
                )
                loading[workers].append(_measure(lambda loader=loader: sum(len(b) for b in loader)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"synth-uodb generation at scale {args.scale} (median of {args.repeats}, interleaved)")
    _print_rates("processes", generation)
    print(f"\nloading batches of {args.batch_size} (sampler + decode + v2 transforms, {args.batches} batches)")
    _print_rates("DataLoader workers", loading)
    return 0


def _print_rates(label: str, runs: dict[int, list[tuple[float, float, int]]]) -> None:
    for key, samples in runs.items():
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        images = samples[0][2]
        print(
            f"  {label} {key}: {images} images, wall {wall:.2f} s ({images / wall:.0f} images/s), "
            f"CPU {cpu:.2f} s ({images / cpu:.0f} images per CPU-second)"
        )
