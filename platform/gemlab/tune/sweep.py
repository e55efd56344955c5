"""A sweep: the trials of a search space, each one ``gemlab train`` run, scheduled by Ray Tune.

Ray 2.60's supported pattern (Train V2): each Tune trial is a *function
trainable* that builds and fits the run's ``TorchTrainer`` with
``TuneReportCallback``, so every evaluation the run reports reaches Tune's
scheduler (ASHA stops weak trials on it). The trial actor itself reserves
no CPU (``{"memory": 1}``): the trainer's workers hold the CPUs.

Folder layout, under ``storage_path/sweeps/<sweep name>/``: Tune's own
state (restored when the same command runs again), ``trials/trial-NNN/``
(each trial's run folder: checkpoints, plan), ``plans/`` (plans cached by
their inputs, so trials that share a plan compute it once) and the sweep's
``results.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gemlab.engine.api import ConfigError, as_plain, compose_config, identity
from gemlab.results_schema import ACCURACY, VARIANT_KEY
from gemlab.storage import Location
from gemlab.tune.space import SpaceError, expand, override
from gemlab.tune.stages import ParentStage
from gemlab.tune.variants import variant_links, variants_from_block

SCHEDULERS = ("asha", "fifo")


@dataclass(frozen=True)
class SweepSpec:
    search: str
    num_samples: int
    seed: int
    space: dict[str, Any]
    metric: str
    mode: str
    scheduler: dict[str, Any]
    max_concurrent_trials: int
    parents: ParentStage | None = None  # a sweep whose trials continue another sweep's (tune/stages.py)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> overrides (tune/variants.py)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SweepSpec:
        """The ``sweep`` block of a composed config; raises ConfigError naming the bad key."""
        if "sweep" not in cfg or cfg.sweep is None:
            raise ConfigError("sweep: no sweep selected; pass sweep=<name> (a file of experiments/sweep/)")
        block = OmegaConf.to_container(cfg.sweep, resolve=True)
        scheduler = dict(block.get("scheduler") or {"name": "fifo"})
        spec = cls(
            search=block.get("search", "grid"),
            num_samples=int(block.get("num_samples", 1)),
            seed=int(block.get("seed", 0)),
            space=dict(block.get("space") or {}),
            metric=block.get("metric", ACCURACY),
            mode=block.get("mode", "max"),
            scheduler=scheduler,
            max_concurrent_trials=int(block.get("max_concurrent_trials", 1)),
            parents=ParentStage.from_block(block.get("parents")),
            variants=variants_from_block(block.get("variants"), block.get("space") or {}),
        )
        if spec.mode not in ("max", "min"):
            raise ConfigError(f"sweep.mode={spec.mode!r}: expected max or min")
        if scheduler.get("name") not in SCHEDULERS:
            raise ConfigError(f"sweep.scheduler.name={scheduler.get('name')!r}: expected one of {SCHEDULERS}")
        if spec.max_concurrent_trials < 1:
            raise ConfigError(f"sweep.max_concurrent_trials={spec.max_concurrent_trials}: expected >= 1")
        try:
            spec.trials()
        except SpaceError as error:
            raise ConfigError(f"sweep.{error}") from None
        return spec

    def trials(self) -> list[dict[str, Any]]:
        return expand(self.space, self.search, self.num_samples, self.seed)

    def variant_links(self) -> dict[int, list[str]]:
        """Each trial's overrides of its named variant (:mod:`gemlab.tune.variants`); raises nothing."""
        return variant_links(self.trials(), self.variants)


def trial_overrides(base: list[str], params: dict[str, Any], links: Sequence[str] = ()) -> list[str]:
    """A trial's Hydra overrides: the sweep command's, its own values, then its links -- its variant's overrides
    and its parent trial (:mod:`gemlab.tune.variants`, :mod:`gemlab.tune.stages`). A variant label is no
    config key: it is swept (a ``param:`` column) but reaches the config through the links only."""
    own = (override(key, value) for key, value in params.items() if key != VARIANT_KEY)
    return [*base, *own, *links]


def check_trials(
    spec: SweepSpec, base: list[str], config_dir: str | None, links: Mapping[int, list[str]] | None = None
) -> None:
    """Compose every trial's config on the driver, so a bad key or value fails before Tune starts.

    ``links``: each trial's overrides that tie it to a parent trial. Raises ConfigError naming the trial,
    its values and the key.
    """
    for index, params in enumerate(spec.trials()):
        try:
            compose_config(trial_overrides(base, params, (links or {}).get(index, ())), config_dir)
        except ConfigError as error:
            raise ConfigError(f"sweep trial {index} {params}: {error}") from None


def sweep_name(cfg: DictConfig, spec: SweepSpec) -> str:
    """``sweep-<tag>-<hash of the base experiment and the search>``: the same command, the same folder."""
    key = json.dumps({"base": identity(cfg), "sweep": as_plain(cfg)["sweep"]}, sort_keys=True)
    return f"sweep-{cfg.tag}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def trial_name(index: int) -> str:
    return f"trial-{index:03d}"


def run_trial(config: dict[str, Any]) -> None:
    """Tune's function trainable: compose, prepare (plan from the cache) and fit one run."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from gemlab.engine.api import fit, prepare

    trial = config["trial"]
    overrides = [
        *trial_overrides(config["base_overrides"], trial["params"], trial["links"]),
        f"name={trial_name(trial['index'])}",
        override("storage_path", config["trials_dir"]),  # quoted: a URI's ?, & and = are Hydra syntax
    ]
    plans = Location.parse(config["plans_dir"])
    prepared = prepare(compose_config(overrides, config["config_dir"]), plan_cache=plans)
    fit(prepared, callbacks=[TuneReportCallback()])


def evaluations_per_run(cfg: DictConfig) -> int:
    return math.ceil(cfg.trainer.max_steps / cfg.trainer.eval_interval)


def make_tuner(
    cfg: DictConfig,
    spec: SweepSpec,
    base: list[str],
    sweep_dir: Location,
    config_dir: str,
    callbacks=(),
    links: Mapping[int, list[str]] | None = None,
):
    """A new Tuner over the expanded trials, or the one restored from ``sweep_dir`` (finished trials stay done).

    ``links``: each trial's overrides that tie it to a parent trial (:mod:`gemlab.tune.stages`).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    trainable = tune.with_resources(run_trial, {"memory": 1})
    if tune.Tuner.can_restore(sweep_dir.uri):
        return tune.Tuner.restore(sweep_dir.uri, trainable=trainable, resume_errored=True)
    options = {k: v for k, v in spec.scheduler.items() if k != "name"}
    if spec.scheduler["name"] == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=evaluations_per_run(cfg), **options)
    else:
        scheduler = FIFOScheduler()
    links = links or {}
    trials = [{"index": i, "params": params, "links": links.get(i, [])} for i, params in enumerate(spec.trials())]
    param_space = {
        "trial": tune.grid_search(trials),
        "base_overrides": base,
        "config_dir": config_dir,
        "trials_dir": (sweep_dir / "trials").uri,
        "plans_dir": (sweep_dir / "plans").uri,
    }
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            scheduler=scheduler,
            max_concurrent_trials=spec.max_concurrent_trials,
            # A trial actor that already imported torch and gemlab takes the next trial (+2.3 s per trial
            # instead of +6.7 s, docs/benchmarks.md) -- but Tune cannot reuse the actor of a function
            # that a scheduler interrupted, so only when no trial is stopped early.
            reuse_actors=spec.scheduler["name"] == "fifo",
        ),
        run_config=tune.RunConfig(
            name=sweep_dir.name, storage_path=sweep_dir.parent.uri, verbose=0, callbacks=list(callbacks)
        ),
    )
