"""``gemlab train``: one command for a whole experiment -- data, affinity, plan, training, evaluation, logs.

    gemlab train experiment=quickstart
    gemlab train experiment=quickstart router=topk moe.num_experts=4 trainer.num_workers=2
    gemlab train experiment=quickstart trainer.num_workers=[1,2]      # elastic

Arguments are Hydra overrides of experiments/config.yaml. Every run (the
configured router, then each of ``baselines`` with the same data, budget and
seed) is checked and planned before Ray starts a worker; each trains in
``storage_path/<run name>``, and rerunning the same command continues it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. router=topk moe.num_experts=4")
    parser.add_argument("--config-dir", type=Path, default=None, help="experiments folder (default: the repo's)")


def _baseline_overrides(overrides: list[str], router: str) -> list[str]:
    """The run's overrides with the router replaced (the main router's options do not apply to it)."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("router=", "router.", "baselines="))]
    return [*kept, f"router={router}", "baselines=[]"]


def _plan_line(prepared) -> str:
    plan = prepared.plan
    experts = " | ".join(f"{e} ← {', '.join(plan.tasks_of(e)) or '-'}" for e in plan.expert_names)
    ratio = f", value/LP {plan.ratio:.4f}" if plan.ratio is not None else ""
    return f"plan ({plan.strategy}{ratio}): {experts}"


def run(args: argparse.Namespace) -> int:
    from gemlab.engine.config import ConfigError, compose_config
    from gemlab.engine.launch import ensure_ray, run_training
    from gemlab.engine.outputs import TENSORBOARD_DIR, TensorBoardLog, comparison_table, progress_line, write_results
    from gemlab.engine.prepare import prepare

    try:
        cfg = compose_config(args.overrides, args.config_dir)
        configs = [cfg] + [
            compose_config(_baseline_overrides(args.overrides, b), args.config_dir)
            for b in dict.fromkeys(cfg.baselines)
            if b != cfg.router.name
        ]
        runs = [prepare(c) for c in configs]
    except ConfigError as error:
        print(f"gemlab train: error: {error}", file=sys.stderr)
        return 2
    mixture = runs[0].mixture
    sizes = ", ".join(f"{n} {d.size}" for n, d in zip(mixture.names, mixture.domains, strict=True))
    print(f"domains (training images): {sizes}")
    for prepared in runs:
        if prepared.plan is not None:
            print(_plan_line(prepared))
    from ray.train import TrainingFailedError

    try:
        ensure_ray(cfg.address, cfg.trainer.verbose)
        results = []
        for prepared in runs:
            label, max_steps = prepared.cfg.router.name, prepared.cfg.trainer.max_steps
            print(f"[{label}] training {prepared.name}: {max_steps} steps")
            log = TensorBoardLog(prepared.run_dir)

            def show(event: dict, label: str = label, max_steps: int = max_steps, log: TensorBoardLog = log) -> None:
                if event["event"] == "eval":
                    print(progress_line(label, event, max_steps), flush=True)
                    log.add(event)

            results.append(run_training(prepared, show))
            log.close()
    except ConfigError as error:
        print(f"gemlab train: error: {error}", file=sys.stderr)
        return 2
    except TrainingFailedError as error:
        print(f"gemlab train: the run failed: {error}", file=sys.stderr)
        return 1
    finished = [(r.prepared.cfg.router.name, r.history[-1]) for r in results if r.history]
    if finished:
        print("\nper-domain accuracy (" + runs[0].cfg.data.eval_split + " split, last evaluation):")
        print(comparison_table(finished))
    print()
    for r in results:
        path = write_results(r.prepared.run_dir, r.prepared.cfg, r.prepared.name, r.history)
        label = r.prepared.cfg.router.name
        print(f"[{label}] {r.seconds:.0f} s  results {path}  tensorboard {path.parent / TENSORBOARD_DIR}")
    return 0
