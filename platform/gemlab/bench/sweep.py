"""``gemlab bench sweep``: Tune's overhead per trial -- a sweep against the same trials in a plain loop.

``sweep=bench`` runs ``--trials`` trials of the tiny experiment one at a time
(FIFO, one trial at once), each long enough (``--steps``) to take 30 s or
more. The same trials then run one after another through the engine's
``train`` (``run_training``), the path ``gemlab train`` takes. Sweep and
loop alternate over ``--repeats``, each in a fresh folder; the table gives
medians of wall time and the overhead per trial, ``(sweep - loop) / trials``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=900, help="steps per trial")
    parser.add_argument("--repeats", type=int, default=2)


def _overrides(args: argparse.Namespace, storage: str) -> list[str]:
    return ["sweep=bench", f"trainer.max_steps={args.steps}", f"storage_path={storage}"]


def _sweep(args: argparse.Namespace, storage: str) -> float:
    from gemlab.engine.api import DEFAULT_CONFIG_DIR, compose_config, portable_overrides
    from gemlab.storage import Location
    from gemlab.tune.sweep import SweepSpec, make_tuner, sweep_name

    started = time.perf_counter()
    cfg = compose_config(_overrides(args, storage))
    spec = SweepSpec.from_config(cfg)
    spec = replace(spec, space={key: values[: args.trials] for key, values in spec.space.items()})
    base = portable_overrides(_overrides(args, storage), cfg)
    sweep_dir = Location.parse(storage) / "sweeps" / sweep_name(cfg, spec)
    make_tuner(cfg, spec, base, sweep_dir, str(DEFAULT_CONFIG_DIR)).fit()
    return time.perf_counter() - started


def _loop(args: argparse.Namespace, storage: str) -> tuple[float, list[float]]:
    from gemlab.engine.api import compose_config, prepare, train
    from gemlab.tune.space import override

    started, each = time.perf_counter(), []
    cfg = compose_config(_overrides(args, storage))
    for index, lr in enumerate(cfg.sweep.space["trainer.lr"][: args.trials]):
        trial_started = time.perf_counter()
        overrides = [*_overrides(args, storage), override("trainer.lr", lr), f"name=loop-{index:03d}"]
        train(prepare(compose_config(overrides)), lambda event: None)
        each.append(time.perf_counter() - trial_started)
    return time.perf_counter() - started, each


def run(args: argparse.Namespace) -> int:
    from gemlab.engine.api import compose_config, ensure_ray, generate_data

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    generate_data(compose_config(["sweep=bench"]))
    ensure_ray(None, verbose=False)
    sweeps, loops, trial_seconds = [], [], []
    for repeat in range(args.repeats):
        for side in ("sweep", "loop") if repeat % 2 == 0 else ("loop", "sweep"):
            with tempfile.TemporaryDirectory(prefix="gemlab-bench-sweep-") as storage:
                if side == "sweep":
                    sweeps.append(_sweep(args, storage))
                else:
                    total, each = _loop(args, storage)
                    loops.append(total)
                    trial_seconds += each
            print(f"repeat {repeat} {side}: {(sweeps if side == 'sweep' else loops)[-1]:.1f} s", flush=True)
    sweep, loop = statistics.median(sweeps), statistics.median(loops)
    overhead = (sweep - loop) / args.trials
    print(f"\n{args.trials} trials of {args.steps} steps, {args.repeats} repeats (medians)")
    print("| | wall (s) | per trial (s) |")
    print("|---|---:|---:|")
    print(f"| plain loop of run_training | {loop:.1f} | {loop / args.trials:.1f} |")
    print(f"| Tune sweep (FIFO, 1 at once) | {sweep:.1f} | {sweep / args.trials:.1f} |")
    print(
        f"\nTune overhead per trial: {overhead:+.1f} s = {100 * overhead / (loop / args.trials):+.1f}% of a trial "
        f"(trials in the loop took {min(trial_seconds):.0f}-{max(trial_seconds):.0f} s)"
    )
    return 0
