"""``gemlab train``: one command for a whole experiment -- data, affinity, plan, training, evaluation, logs.

    gemlab train experiment=quickstart
    gemlab train experiment=quickstart router=topk moe.num_experts=4 trainer.num_workers=2
    gemlab train experiment=quickstart trainer.num_workers=[1,2]      # elastic
    gemlab train experiment=quickstart baselines=[] adapt.parent=runs/quickstart-gem-… adapt.add=[rot15]

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


def _adaptation_line(prepared) -> str:
    """Where an adapted run starts: its parent and step, and what re-planning did (planned routers)."""
    adaptation, plan = prepared.adaptation, prepared.plan
    start = f"adapting {adaptation.checkpoint} to {', '.join(adaptation.added)}"
    if plan is None:
        return f"{start}: they join the mixture (the router follows no plan)"
    details = plan.details["adapt"]
    moves = "; ".join(f"{task} moved {before} → {after}" for task, before, after in details["moved"])
    kept = "every old domain kept its expert" if details["kept_all"] else f"re-planned: {moves or 'nothing moved'}"
    new = "".join(f"; {e} starts as {f'a copy of {s}' if s else 'drawn'}" for e, s in details["new_experts"].items())
    return f"{start}: {kept}{new}"


def _restart_line(label: str, event: dict) -> str:
    """What the user sees when the worker group starts again within one run."""
    where = f"the checkpoint of step {event['start_step']}" if event["checkpoint"] else "scratch (no checkpoint yet)"
    skipped = "".join(f"; damaged checkpoint skipped: {problem}" for problem in event["skipped"])
    restarted = "the worker group restarted (a worker failed, or nodes joined or left)"
    return f"[{label}] {restarted}; continuing from {where}{skipped}"


def _train_or_read(prepared, address: str | None, verbose: bool):
    """Train one prepared run on Ray, printing a line per evaluation; a finished run's results are only read.

    Raises NoUsableCheckpoint when the run has checkpoints and none verifies.
    """
    from gemlab.engine.api import ensure_ray, train
    from gemlab.engine.checkpoint import read_history
    from gemlab.engine.launch import RunResult
    from gemlab.engine.model import method_label
    from gemlab.engine.outputs import TensorBoardLog, progress_line
    from gemlab.engine.resume import find_resume_point

    label, max_steps = method_label(prepared.cfg), prepared.cfg.trainer.max_steps
    resume = find_resume_point(prepared.run_dir)
    for line in resume.warnings():
        print(f"[{label}] warning: {line}", file=sys.stderr, flush=True)
    resume.require_usable()
    if resume.folder is not None and resume.step >= max_steps:
        print(f"[{label}] {prepared.name} finished at step {resume.step}: its results are read, not retrained")
        return RunResult(prepared, read_history(resume.folder))
    start = "from its parent's weights" if prepared.adaptation else "from scratch"
    start = f"continuing from step {resume.step} ({resume.folder.name})" if resume.folder else start
    print(f"[{label}] training {prepared.name}: {max_steps} steps, {start}")
    log = TensorBoardLog(prepared.run_dir)
    group_starts = 0

    def show(event: dict) -> None:
        nonlocal group_starts
        if event["event"] == "start" and event["rank"] == 0:
            group_starts += 1
            if group_starts > 1:
                print(_restart_line(label, event), flush=True)
        if event["event"] == "eval":
            print(progress_line(label, event, max_steps), flush=True)
            log.add(event)

    ensure_ray(address, verbose)  # once per process, and only when something trains
    try:
        return train(prepared, show)
    finally:
        log.close()


def run(args: argparse.Namespace) -> int:
    from gemlab.engine.api import compose_config, prepare, write_run_results
    from gemlab.engine.launch import RunFailed, RunStopped
    from gemlab.engine.model import method_label
    from gemlab.engine.outputs import TENSORBOARD_DIR, comparison_table

    cfg = compose_config(args.overrides, args.config_dir)
    configs = [cfg] + [
        compose_config(_baseline_overrides(args.overrides, b), args.config_dir)
        for b in dict.fromkeys(cfg.baselines)
        if b != cfg.router.name
    ]
    runs = [prepare(c) for c in configs]
    mixture = runs[0].mixture
    sizes = ", ".join(f"{n} {d.size}" for n, d in zip(mixture.names, mixture.domains, strict=True))
    print(f"domains (training images): {sizes}")
    for prepared in runs:
        if prepared.adaptation is not None:
            print(_adaptation_line(prepared))
        if prepared.plan is not None:
            print(_plan_line(prepared))
    try:
        results = [_train_or_read(prepared, cfg.address, cfg.trainer.verbose) for prepared in runs]
    except RunFailed as error:
        print(f"gemlab train: the run failed: {error}", file=sys.stderr)
        return 1
    except RunStopped as stopped:
        print(f"gemlab train: {stopped}; its checkpoints are kept and the same command continues it", flush=True)
        return 130  # the shell's code for a run ended by SIGINT
    finished = [(method_label(r.prepared.cfg), r.history[-1]) for r in results if r.history]
    if finished:
        print(f"\nper-domain {finished[0][1]['metric']} ({cfg.data.eval_split} split, last evaluation):")
        print(comparison_table(finished))
    print()
    for r in results:
        path = write_run_results(r.prepared, r.history)
        took = f"{r.seconds:.0f} s  " if r.seconds else ""
        print(f"[{method_label(r.prepared.cfg)}] {took}results {path}  tensorboard {path.parent / TENSORBOARD_DIR}")
    return 0
