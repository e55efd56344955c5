"""``gemlab sweep``: every trial of a search space as a training run, scheduled by Ray Tune.

    gemlab sweep sweep=smoke                              # 4 trials of the tiny experiment, ASHA
    gemlab sweep sweep=lambda_topk experiment=quickstart  # the same search on another experiment

Arguments are the Hydra overrides of ``gemlab train`` plus ``sweep=<name>``
(a file of experiments/sweep/). Every trial's config is composed before Tune
starts. Running the same command again restores the sweep: finished trials
are not rerun, unfinished ones continue from their checkpoints. The sweep's
``results.parquet`` and a leaderboard come at the end. A sweep with
``sweep.parents`` runs its parent sweep first and continues its trials
(:mod:`gemlab.tune.stages`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gemlab.storage import Location


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep=smoke experiment=quickstart")
    parser.add_argument("--config-dir", type=Path, default=None, help="experiments folder (default: the repo's)")


def _progress_callback(max_steps: int, metric: str):
    from ray import tune

    from gemlab.tune.sweep import trial_name

    class TrialLines(tune.Callback):
        """One line per trial evaluation and per trial end, printed by the driver."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            name, value = trial_name(trial.config["trial"]["index"]), result.get(metric, float("nan"))
            print(f"[{name}] step {result.get('step', '?'):>5}/{max_steps}  {metric} {value:.3f}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            step = (trial.last_result or {}).get("step", 0)
            how = "finished" if step >= max_steps else f"stopped early at step {step}"
            print(f"[{trial_name(trial.config['trial']['index'])}] {how}  {trial.config['trial']['params']}")

    return TrialLines()


def saved_statuses(sweep_dir: Location) -> dict[int, str]:
    """Each trial's Tune status by index, as the sweep's saved experiment state has it.

    Read back from storage, not taken from the ResultGrid: after an interruption Tune marks the trials it
    stops while cleaning up TERMINATED in memory, but the state it saved just before records them
    unfinished (RUNNING, PENDING, PAUSED), which is what a restore resumes. Trials that Tune had not created
    yet are absent.
    """
    from ray.tune import ExperimentAnalysis

    return {trial.config["trial"]["index"]: trial.status for trial in ExperimentAnalysis(sweep_dir.uri).trials}


def trial_status(tune_status: str | None, reported_step: int, max_steps: int) -> str:
    """The leaderboard's word for a trial: what the scheduler saw, and whether the sweep let it end."""
    if tune_status == "ERROR":
        return "failed"
    if tune_status != "TERMINATED":
        return "interrupted"
    return "finished" if reported_step >= max_steps else f"stopped at {reported_step}"


def leaderboard(rows: list[dict[str, Any]], metric: str, mode: str) -> str:
    """Trials ranked by their last evaluation's ``metric``, as Markdown."""
    ranked = sorted(rows, key=lambda r: r["value"], reverse=mode == "max")
    lines = [f"| rank | trial | {metric} | steps trained | scheduler | params |", "|---:|---|---:|---:|---|---|"]
    for rank, row in enumerate(ranked, 1):
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items())
        cells = [str(rank), row["trial"], f"{row['value']:.4f}", str(row["step"]), row["status"], params]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parent_links(spec, parent_overrides: list[str], config_dir: str | None) -> dict[int, list[str]]:
    """Each trial's links to its parent sweep's trial (:mod:`gemlab.tune.stages`); raises ConfigError."""
    from gemlab.engine.api import checked_storage, compose_config
    from gemlab.tune.sweep import SweepSpec, sweep_name

    parent_cfg = compose_config(parent_overrides, config_dir)
    parent_spec = SweepSpec.from_config(parent_cfg)
    parent_dir = checked_storage(parent_cfg) / "sweeps" / sweep_name(parent_cfg, parent_spec)
    return spec.parents.links(spec.trials(), parent_spec.trials(), parent_dir / "trials")


def run(args: argparse.Namespace) -> int:
    from gemlab.engine.api import (
        DEFAULT_CONFIG_DIR,
        checked_storage,
        compose_config,
        ensure_ray,
        generate_data,
        portable_overrides,
    )
    from gemlab.tune.results import collect_results
    from gemlab.tune.sweep import SweepSpec, check_trials, make_tuner, sweep_name
    from gemlab.tune.variants import joined_links

    config_dir = str(Path(args.config_dir).resolve()) if args.config_dir else None
    cfg = compose_config(args.overrides, config_dir)
    spec = SweepSpec.from_config(cfg)
    sweep_dir = checked_storage(cfg) / "sweeps" / sweep_name(cfg, spec)  # the destination first, in seconds
    base = portable_overrides(list(args.overrides), cfg)
    links = spec.variant_links()
    if spec.parents is not None:  # the parent sweep first (restored when it has run), then the links to it
        parent_args = argparse.Namespace(overrides=spec.parents.parent_overrides(args.overrides), config_dir=config_dir)
        code = run(parent_args)
        if code != 0:
            return code
        links = joined_links(links, parent_links(spec, parent_args.overrides, config_dir))
    check_trials(spec, base, config_dir, links)
    generate_data(compose_config(base, config_dir))  # data made once, here
    trials = spec.trials()
    print(f"sweep {sweep_dir.name}: {len(trials)} trials ({spec.search}), {spec.metric} ({spec.mode}), "
          f"scheduler {spec.scheduler['name']}, up to {spec.max_concurrent_trials} at once")  # fmt: skip
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables off: the lines below say what happens
    ensure_ray(cfg.address, cfg.trainer.verbose)

    callback = _progress_callback(cfg.trainer.max_steps, spec.metric)
    tuner = make_tuner(cfg, spec, base, sweep_dir, config_dir or str(DEFAULT_CONFIG_DIR), [callback], links)
    grid = tuner.fit()
    errors = [str(result.error) for result in grid if result.error is not None]
    # a trial that never reported (interrupted before its first step) has no config in its result
    seen = {result.config["trial"]["index"]: result.metrics.get("step", 0) for result in grid if result.config}
    path, rows = collect_results(sweep_dir, trials, base, config_dir, spec.metric, links)
    statuses = saved_statuses(sweep_dir)
    for row in rows:  # what the scheduler saw: a stopped run may have trained on until its workers were stopped
        index = int(row["trial"].removeprefix("trial-"))
        row["status"] = trial_status(statuses.get(index), seen.get(index, 0), cfg.trainer.max_steps)
    print("\n" + leaderboard(rows, spec.metric, spec.mode))
    print(f"\nresults {path}  trial runs {sweep_dir / 'trials'}")
    if errors:
        print(f"gemlab sweep: {len(errors)} trial(s) failed:\n" + "\n".join(errors), file=sys.stderr)
        return 1
    ended = sum(status in ("TERMINATED", "ERROR") for status in statuses.values())
    if ended < len(trials):  # SIGINT (Ctrl-C, gemlab jobs stop): Tune saved its state before it returned
        print(f"gemlab sweep: interrupted after {ended} of {len(trials)} trials ended; "
              "the same command resumes the sweep", flush=True)  # fmt: skip
        return 130
    return 0
