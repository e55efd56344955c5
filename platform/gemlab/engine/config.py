"""The experiment config: composed by Hydra from ``experiments/``, checked before Ray starts anything.

    cfg = compose_config(["experiment=quickstart", "router=topk", "moe.num_experts=4"])
    run_name(cfg)          # 'quickstart-topk-1f0c2a9b': same experiment keys, same folder

The run name hashes only the keys that define *what* is trained. Keys that
say *how* or *how long* (worker count, step budget, failures allowed, where
to store) are left out, so that rerunning with more workers or a larger
budget continues the same run instead of starting a new one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gemlab.data.longtail import PROFILES
from gemlab.errors import GemlabError
from gemlab.repository import REPO_ROOT

DEFAULT_CONFIG_DIR = REPO_ROOT / "experiments"  # the repository's own experiments

# Keys that do not change what is trained: a rerun that changes only these continues the run.
NOT_IDENTITY = ("name", "resume", "storage_path", "address", "baselines", "testing", "sweep")
NOT_IDENTITY_TRAINER = (
    "num_workers",
    "use_gpu",
    "cpus_per_worker",
    "max_steps",
    "max_failures",
    "keep_checkpoints",
    "verbose",
)
RESUME_MODES = ("auto", "never")
OPTIMIZERS = ("adamw", "adam", "sgd")  # trainer.optimizer (built in gemlab.engine.optim)
SCHEDULES = ("constant", "cosine", "step")  # trainer.schedule


class ConfigError(GemlabError, ValueError):
    """A config that cannot run; the message names the key and the value."""


def compose_config(overrides: Sequence[str], config_dir: str | Path | None = None) -> DictConfig:
    """The config of ``experiments/config.yaml`` with Hydra ``overrides``; raises ConfigError, naming the override.

    Hydra's struct mode turns an override of a key that does not exist into an error rather than a new key.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    folder = Path(config_dir or DEFAULT_CONFIG_DIR).resolve()
    if not (folder / "config.yaml").is_file():
        raise ConfigError(f"config dir {folder}: no config.yaml there")
    try:
        with initialize_config_dir(config_dir=str(folder), version_base=None, job_name="gemlab"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"config: {_one_line(str(error))}") from None
    validate(cfg)
    return cfg


def _one_line(hydra_message: str) -> str:
    """Hydra's message in one line: its search path and its advice to add keys with ``+`` left out.

    Appending a key gemlab does not read would only hide a typo; the options Hydra lists are kept.
    """
    lines = [line.strip() for line in hydra_message.split("\nConfig search path")[0].splitlines()]
    lines = [line for line in lines if line and not line.startswith("To append to your config")]
    head, *rest = lines or ["invalid overrides"]
    if rest and rest[0].endswith(":"):  # "Available options in 'experiment':" and one option per line
        return f"{head}; {rest[0]} {', '.join(rest[1:])}"
    return "; ".join([head, *rest])


def _require(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"config: {key}={value!r}: expected {expected}")


def worker_range(cfg: DictConfig) -> tuple[int, int]:
    """(min, max) workers: equal for a fixed count, a range for elastic ``[min, max]``."""
    value = cfg.trainer.num_workers
    counts = list(value) if OmegaConf.is_list(value) else [value, value]
    ok = len(counts) == 2 and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts)
    _require(
        ok and counts[0] <= counts[1],
        "trainer.num_workers",
        OmegaConf.to_object(value) if OmegaConf.is_list(value) else value,
        "an integer >= 1 or [min, max] with 1 <= min <= max",
    )
    return counts[0], counts[1]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for values no run can use (router and model options are checked when they are built)."""
    worker_range(cfg)
    trainer = cfg.trainer
    for key in ("max_steps", "batch_size", "eval_interval", "eval_batch_size", "keep_checkpoints"):
        value = trainer[key]
        _require(isinstance(value, int) and value >= 1, f"trainer.{key}", value, "an integer >= 1")
    _require(
        isinstance(trainer.max_failures, int) and trainer.max_failures >= 0,
        "trainer.max_failures",
        trainer.max_failures,
        "an integer >= 0",
    )
    _require(trainer.lr > 0 and trainer.weight_decay >= 0, "trainer.lr", trainer.lr, "lr > 0, weight_decay >= 0")
    _validate_optimisation(trainer)
    _require(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")
    _require(cfg.resume in RESUME_MODES, "resume", cfg.resume, f"one of {RESUME_MODES}")
    _require(
        isinstance(cfg.moe.num_experts, int) and cfg.moe.num_experts >= 1,
        "moe.num_experts",
        cfg.moe.num_experts,
        "an integer >= 1",
    )
    _validate_moe(cfg)
    _require(
        cfg.data.source in ("digits", "synth_uodb", "collection"),
        "data.source",
        cfg.data.source,
        "digits, synth_uodb or collection",
    )
    _validate_plan(cfg.plan)
    _validate_invariance(cfg.invariance)
    _validate_adapt(cfg.adapt)
    if cfg.adapt.parent is not None and len(cfg.baselines):
        raise ConfigError(
            f"config: baselines={list(cfg.baselines)}: an adapted run continues one parent; set baselines=[] "
            "and adapt each baseline's own run"
        )
    _validate_long_tail(cfg.data.get("long_tail"))
    _require(
        isinstance(cfg.tag, str) and cfg.tag.replace("_", "").replace("-", "").isalnum(),
        "tag",
        cfg.tag,
        "letters, digits, - and _",
    )
    if cfg.name is not None:
        _require(
            isinstance(cfg.name, str) and cfg.name.replace("_", "").replace("-", "").isalnum(),
            "name",
            cfg.name,
            "letters, digits, - and _ (a folder name)",
        )
    fail = cfg.testing.fail_once_at_step
    _require(
        fail is None or (isinstance(fail, int) and 1 <= fail <= trainer.max_steps),
        "testing.fail_once_at_step",
        fail,
        f"null or a step in 1..{trainer.max_steps}",
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate_optimisation(trainer: DictConfig) -> None:
    """The optimizer, lr schedule, per-group lr and initial-weights keys of ``trainer``; raises ConfigError."""
    _require(trainer.optimizer in OPTIMIZERS, "trainer.optimizer", trainer.optimizer, f"one of {OPTIMIZERS}")
    momentum, factor, scale = trainer.momentum, trainer.decay_factor, trainer.backbone_lr_scale
    _require(_is_number(momentum) and 0 <= momentum < 1, "trainer.momentum", momentum, "a number in [0, 1)")
    _require(trainer.schedule in SCHEDULES, "trainer.schedule", trainer.schedule, f"one of {SCHEDULES}")
    warmup = trainer.warmup_steps
    _require(isinstance(warmup, int) and warmup >= 0, "trainer.warmup_steps", warmup, "an integer >= 0")
    decay = trainer.decay_steps
    needed = trainer.schedule != "constant"
    _require(
        (decay is None and not needed) or (isinstance(decay, int) and decay >= 1),
        "trainer.decay_steps",
        decay,
        f"an integer >= 1 (trainer.schedule={trainer.schedule} needs it)" if needed else "null or an integer >= 1",
    )
    _require(_is_number(factor) and 0 < factor <= 1, "trainer.decay_factor", factor, "a number in (0, 1]")
    _require(_is_number(scale) and scale >= 0, "trainer.backbone_lr_scale", scale, "a number >= 0 (0: frozen trunk)")
    init = trainer.init_from
    _require(init is None or (isinstance(init, str) and init), "trainer.init_from", init, "null or a file path")


CAPACITY_MODES = ("count", "load")  # plan.capacity_mode (gemlab.engine.prepare.assignment_problem)


def _validate_plan(plan: DictConfig) -> None:
    """``plan.level``, ``plan.capacity_mode``, ``plan.slack`` and ``plan.repair``; raises ConfigError naming the key.

    Load capacities weigh domains by their sampling mass, which class-level tasks have none of; and a
    ``plan.capacity`` (a count of tasks) under load mode would be ignored, so it is refused instead.
    """
    _require(plan.level in ("domain", "class"), "plan.level", plan.level, "domain or class")
    mode, slack = plan.capacity_mode, plan.slack
    _require(mode in CAPACITY_MODES, "plan.capacity_mode", mode, f"one of {CAPACITY_MODES}")
    ok = _is_number(slack) and math.isfinite(slack) and slack >= 1
    _require(ok, "plan.slack", slack, "a finite number >= 1 (below 1 the experts cannot hold the whole load)")
    _require(isinstance(plan.repair, bool), "plan.repair", plan.repair, "true or false")
    if mode == "load":
        _require(plan.level == "domain", "plan.level", plan.level, "domain (plan.capacity_mode=load weighs domains)")
        _require(
            plan.capacity is None,
            "plan.capacity",
            plan.capacity,
            "null under plan.capacity_mode=load (each expert holds plan.slack x the fair share of the load)",
        )


def _validate_moe(cfg: DictConfig) -> None:
    """``moe.param_budget``: null or a finite number > 0, and not beside ``model.expert_hidden``; raises ConfigError.

    Both would set the experts' hidden width (the detector passes ``model.expert_hidden`` as the width the
    budget is measured in), so one of them would silently lose. Whether the router and model have FFN
    experts for the budget to size is checked where the model is built (:func:`gemlab.engine.model.build_model`).
    """
    budget = cfg.moe.param_budget
    ok = budget is None or (_is_number(budget) and math.isfinite(budget) and budget > 0)
    _require(ok, "moe.param_budget", budget, "null or a finite number > 0 (the experts' parameters in dense FFNs)")
    if budget is not None and cfg.model.get("expert_hidden") is not None:
        raise ConfigError(
            f"config: moe.param_budget={budget} and model.expert_hidden={cfg.model.expert_hidden}: both set the "
            "experts' hidden width; set one (model.expert_hidden=null to size the experts by the budget)"
        )


INVARIANCE_MODES = ("none", "global", "subset")  # invariance.mode (gemlab.engine.invariance)


def _validate_invariance(invariance: DictConfig) -> None:
    """``invariance.mode`` and ``invariance.weight`` (λ); raises ConfigError naming the key.

    Whether a mode fits the router (subset needs a domain -> expert table) is checked where the
    alignment is built (:func:`gemlab.engine.invariance.build_alignment`).
    """
    mode, weight = invariance.mode, invariance.weight
    _require(mode in INVARIANCE_MODES, "invariance.mode", mode, f"one of {INVARIANCE_MODES}")
    ok = isinstance(weight, int | float) and not isinstance(weight, bool) and math.isfinite(weight) and weight >= 0
    _require(ok, "invariance.weight", weight, "a finite number >= 0")


ADAPT_INITS = ("copy", "scratch")  # adapt.init (gemlab.engine.adapt)


def _validate_adapt(adapt: DictConfig) -> None:
    """The ``adapt.*`` keys' values; raises ConfigError naming the key.

    Whether the parent exists and fits is checked when the run is prepared (:mod:`gemlab.engine.adapt`).
    """
    parent, added = adapt.parent, adapt.add
    _require(parent is None or (isinstance(parent, str) and parent), "adapt.parent", parent, "null or a run folder")
    names = list(added) if OmegaConf.is_list(added) else None
    ok = names is not None and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
    _require(ok, "adapt.add", added, "a list of distinct domain names")
    new = adapt.new_experts
    whole = isinstance(new, int) and not isinstance(new, bool)
    _require(whole and new >= 0, "adapt.new_experts", new, "an integer >= 0")
    _require(adapt.init in ADAPT_INITS, "adapt.init", adapt.init, f"one of {ADAPT_INITS}")
    replay = adapt.replay
    _require(replay is None or (_is_number(replay) and 0 <= replay < 1), "adapt.replay", replay, "null or in [0, 1)")
    if parent is None:
        given = [key for key, value in (("add", names), ("new_experts", new), ("replay", replay)) if value]
        if given or replay is not None:
            key = given[0] if given else "replay"
            raise ConfigError(f"config: adapt.{key} needs adapt.parent: the trained run to continue")
    else:
        _require(bool(names), "adapt.add", added, "at least one domain to add to the parent's")


def _validate_long_tail(long_tail: Any) -> None:
    """``data.long_tail``: null, or ``{rho: a number >= 1, profile: exponential}``; raises ConfigError naming it."""
    if long_tail is None:
        return
    _require(OmegaConf.is_dict(long_tail), "data.long_tail", long_tail, "null or {rho: ρ, profile: exponential}")
    unknown = sorted(set(long_tail) - {"rho", "profile"})
    if unknown:
        raise ConfigError(f"config: data.long_tail.{unknown[0]}: not a key of data.long_tail (rho, profile)")
    rho = long_tail.get("rho")
    ok = _is_number(rho) and math.isfinite(rho) and rho >= 1
    _require(ok, "data.long_tail.rho", rho, "a finite number >= 1 (the imbalance ratio n_max / n_min)")
    profile = long_tail.get("profile", "exponential")
    _require(profile in PROFILES, "data.long_tail.profile", profile, f"one of {PROFILES}")


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The keys that define what is trained (see the module docstring), as plain data."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IDENTITY:
        data.pop(key, None)
    for key in NOT_IDENTITY_TRAINER:
        data["trainer"].pop(key, None)
    return data


def identity_digest(cfg: DictConfig) -> str:
    return digest_of(identity(cfg))


def digest_of(identity_keys: dict[str, Any]) -> str:
    """The SHA-256 of an identity (as :func:`identity` gives it, or as ``run.json`` records it)."""
    return hashlib.sha256(json.dumps(identity_keys, sort_keys=True).encode()).hexdigest()


def run_name(cfg: DictConfig) -> str:
    """``cfg.name``, or ``<tag>-<router>-<8 hex digits of the experiment keys>``."""
    return cfg.name or f"{cfg.tag}-{cfg.router.name}-{identity_digest(cfg)[:8]}"


def default_capacity(num_tasks: int, num_experts: int) -> int:
    """The fewest tasks per expert that hold every task: ceil(tasks / experts)."""
    return math.ceil(num_tasks / num_experts)


def as_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain dicts and lists (what crosses into Ray workers and checkpoints)."""
    return OmegaConf.to_container(cfg, resolve=True)
