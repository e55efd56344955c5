"""Everything the driver settles before Ray starts a worker: data, affinity, plan, run folder.

Bad input must fail here, in seconds and with a message naming the key or
file, not minutes later inside a worker: the data are read, the router and
model are built once, the plan is solved, and the run folder is checked
(writable; if it holds a run, that run is this experiment with this plan).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from omegaconf import DictConfig

from gemlab.data.errors import DataError
from gemlab.data.mixture import DomainMixture
from gemlab.engine.config import (
    ConfigError,
    as_plain,
    default_capacity,
    identity,
    identity_digest,
    run_name,
    worker_range,
)
from gemlab.engine.data import build_mixture, replay_of, resolve
from gemlab.engine.invariance import check_alignment_parallelism
from gemlab.engine.model import build_model, build_stem, needs_plan, routing_table
from gemlab.engine.parameters import RECORD_KEY as PARAMETERS_KEY
from gemlab.engine.parameters import count_parameters
from gemlab.engine.pretrained import load_trunk
from gemlab.engine.tasks import task_of
from gemlab.errors import user_message
from gemlab.plan.affinity import CostMatrix
from gemlab.plan.errors import PlanError
from gemlab.plan.heldout import split_affinity, with_heldout_tasks
from gemlab.plan.plan import Plan
from gemlab.plan.planner import make_plan
from gemlab.plan.problem import LOAD_TOLERANCE, AssignmentProblem
from gemlab.plan.strategies import StrategyOptions
from gemlab.storage import Location, StorageError

if TYPE_CHECKING:
    from gemlab.engine.adapt import Adaptation

RUN_FILE, PLAN_FILE = "run.json", "plan.json"
RECORD_KEYS = ("identity_digest", "plan_fingerprint")  # beside "identity" in run.json


@dataclass(frozen=True)
class Prepared:
    cfg: DictConfig
    name: str
    run_dir: Location  # storage_path/name: a folder, or a prefix in an object store
    mixture: DomainMixture
    plan: Plan | None
    table: tuple[int, ...] | None  # domain -> expert for expert-parallel routers, else None
    adaptation: Adaptation | None = None  # an adapted run's parent, as its workers need it
    parameters: dict | None = None  # the model's parameter counts, as run.json records them (engine/parameters.py)


def plan_fingerprint(plan: Plan | None) -> str | None:
    """What expert shards depend on: task and expert names and the assignment (not float costs)."""
    if plan is None:
        return None
    key = [list(plan.task_names), list(plan.expert_names), plan.assignment.tolist()]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


@torch.no_grad()
def task_features(cfg: DictConfig, mixture: DomainMixture) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Mean stem feature of each task (domain, or global class) on the calibration split, and every sample's.

    The stem is built before any MoE layer, so its initialisation -- and so
    the plan -- does not depend on the router; its MoE layers are stand-ins
    that route nothing, so the planned routers (which need this very plan)
    stay out of the loop. ``affinity.backbone=init`` is the stem training starts from: the model's
    initialisation, or the trunk of ``trainer.init_from`` when one is set.
    """
    model = build_stem(as_plain(cfg), mixture).eval()
    if cfg.affinity.backbone != "init":
        load_trunk(model, cfg.affinity.backbone, "affinity.backbone")
    elif cfg.trainer.init_from is not None:
        load_trunk(model, cfg.trainer.init_from, "trainer.init_from")
    data, split = task_of(mixture).data(mixture, cfg.data.image_size), cfg.data.calibration_split
    by_domain = cfg.plan.level == "domain"
    num_tasks = len(mixture.domains) if by_domain else len(mixture.labels.names)
    sums, counts, pool = None, np.zeros(num_tasks), []
    for d in range(len(mixture.domains)):
        if d in mixture.heldout and not by_domain:
            continue  # a held-out domain's labels must not shape a class plan
        images, classes = data.calibration(d, split, cfg.affinity.samples_per_domain, cfg.seed)
        features = model.features(images).double().numpy()
        # a sample counts for its domain, or for each class it shows (a detection image shows several)
        pairs = (
            [(i, d) for i in range(len(classes))] if by_domain else [(i, c) for i, cs in enumerate(classes) for c in cs]
        )
        samples, tasks = np.array(pairs, dtype=np.int64).reshape(-1, 2).T  # (sample, task) pairs
        sums = np.zeros((num_tasks, features.shape[1])) if sums is None else sums
        np.add.at(sums, tasks, features[samples])
        np.add.at(counts, tasks, 1)
        if d not in mixture.heldout:  # anchors come from the training domains alone
            pool.append(features)
    names = list(mixture.names) if by_domain else list(mixture.labels.names)
    missing = [names[t] for t in np.flatnonzero(counts == 0)]
    if missing:
        raise ConfigError(f"data.calibration_split={split!r}: no calibration samples of {missing}")
    return sums / counts[:, None], names, np.concatenate(pool)


def assignment_problem(cfg: DictConfig, costs: CostMatrix, mixture: DomainMixture) -> AssignmentProblem:
    """The problem over ``costs``' tasks and experts that ``plan.capacity_mode`` asks for.

    ``count``: at most ``plan.capacity`` tasks per expert (default ⌈tasks / experts⌉), an LP that is
    integral. ``load``: each task -- a domain of ``mixture``, found by name -- weighs its sampling mass
    p_d, and each expert holds ``plan.slack`` x the fair share (total mass / experts), an LP that splits
    domains. The loads are the very masses expert-parallel placement weighs experts by
    (:func:`gemlab.engine.parallel.expert_masses`), so a load plan's expert loads are the experts' masses.
    Raises ConfigError naming ``plan.slack`` and the smallest slack that fits when one domain outweighs an
    expert, and naming ``plan`` for a task the mixture lacks or capacities that cannot hold every task.
    """
    tasks, experts = costs.task_names, costs.expert_names
    try:
        if cfg.plan.capacity_mode == "count":
            capacity = cfg.plan.capacity or default_capacity(len(tasks), len(experts))
            return AssignmentProblem.count(costs.costs, capacity, tasks, experts)
        masses = mixture.weights[[mixture.index(name) for name in tasks]]
        capacity = cfg.plan.slack * masses.sum() / len(experts)
        heaviest = int(np.argmax(masses))
        if masses[heaviest] > capacity * (1 + LOAD_TOLERANCE):
            needed = np.ceil(masses[heaviest] * len(experts) / masses.sum() * 1000) / 1000
            raise ConfigError(
                f"plan.slack={cfg.plan.slack}: domain {tasks[heaviest]!r} has sampling mass {masses[heaviest]:.4g}, "
                f"more than an expert's capacity {capacity:.4g} (slack x total mass / {len(experts)} experts); "
                f"the smallest slack that fits it is {needed:g}"
            )
        return AssignmentProblem.load(costs.costs, masses, capacity, tasks, experts)
    except (PlanError, DataError) as error:
        raise ConfigError(f"plan: {error}") from None


def strategy_options(cfg: DictConfig) -> StrategyOptions:
    """The planner's options as the run's ``plan.*`` keys and seed set them."""
    plan = cfg.plan
    return StrategyOptions(precision=plan.precision, repair=plan.repair, seed=cfg.seed, time_limit=plan.time_limit)


def solve_plan(cfg: DictConfig, mixture: DomainMixture) -> Plan:
    """GEM's plan: affinity of task features to k-means++ anchors, then the configured strategy.

    The problem is :func:`assignment_problem`'s (count or load capacities). Anchors are fitted on the
    task means -- each expert starts at a cluster of similar tasks -- unless there are more experts than
    tasks; then on the calibration samples themselves. A held-out domain
    (``data.holdout``, domain-level plans) is planned without: anchors and assignment come from the
    training domains, and it is then sent to its closest anchor's expert (:mod:`gemlab.plan.heldout`).
    """
    means, names, samples = task_features(cfg, mixture)
    heldout = mixture.heldout if cfg.plan.level == "domain" else ()
    num_experts, trained = cfg.moe.num_experts, len(names) - len(heldout)
    pool = samples if num_experts > trained else None
    try:
        costs, heldout_costs = split_affinity(means, names, heldout, num_experts, cfg.seed, anchor_pool=pool)
        problem = assignment_problem(cfg, costs, mixture)
        options = strategy_options(cfg)
        plan = make_plan(problem, cfg.plan.strategy, options)
        return with_heldout_tasks(plan, {d: names[d] for d in heldout}, heldout_costs) if heldout else plan
    except PlanError as error:
        room = f" (plan.slack={cfg.plan.slack}: a larger slack gives every expert more room)"
        raise ConfigError(f"plan: {error}" + (room if cfg.plan.capacity_mode == "load" else "")) from None


def planner_inputs_digest(cfg: DictConfig) -> str:
    """What the plan depends on: data, stem (model, initial weights), affinity, planner settings, expert count, seed."""
    plain = as_plain(cfg)
    inputs = {key: plain[key] for key in ("data", "model", "affinity", "plan", "seed")}
    inputs["num_experts"] = plain["moe"]["num_experts"]
    inputs["init_from"] = plain["trainer"]["init_from"]
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def read_plan(file: Location) -> Plan:
    """A plan saved as JSON in the run's storage; raises PlanInputError naming the file if it is not one."""
    return Plan.from_json(file.read_text(), source=str(file))


def cached_plan(cfg: DictConfig, mixture: DomainMixture, cache: Location | None) -> Plan:
    """The plan from ``cache/<planner inputs digest>.json``, solved and stored there on a miss.

    Sweep trials that differ only in what the plan does not depend on (λ, lr, seed of nothing planned)
    share one plan instead of each computing features and solving again.
    """
    if cache is None:
        return solve_plan(cfg, mixture)
    path = cache / f"{planner_inputs_digest(cfg)}.json"
    if path.is_file():
        return read_plan(path)
    plan = solve_plan(cfg, mixture)
    path.write_text(plan.to_json())  # whole or absent: a concurrent trial reads no part of it
    return plan


def storage_location(cfg: DictConfig) -> Location:
    """``storage_path`` as a Location; raises ConfigError when pyarrow cannot open it."""
    try:
        return Location.parse(cfg.storage_path)
    except StorageError as error:
        raise ConfigError(f"storage_path: {error}") from None


def checked_storage(cfg: DictConfig) -> Location:
    """``storage_path``, checked to be writable without creating anything: commands check it before any work.

    Raises ConfigError naming the path when pyarrow cannot open it or it cannot be written.
    """
    storage = storage_location(cfg)
    try:
        storage.check_creatable()
    except OSError as error:
        raise ConfigError(f"storage_path: cannot write to {storage}: {user_message(error)}") from None
    return storage


def check_resumable(cfg: DictConfig, run_dir: Location, plan: Plan | None) -> None:
    """Refuse a run folder holding another experiment, another plan, or any run when ``resume=never``."""
    record = run_dir / RUN_FILE
    if not record.is_file():
        return
    if cfg.resume == "never":
        raise ConfigError(f"resume=never: {run_dir} already holds a run; choose another name or resume=auto")
    previous = read_run_record(record)
    if previous["identity_digest"] != identity_digest(cfg):
        old, new = flatten(previous["identity"]), flatten(identity(cfg))
        changed = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
        raise ConfigError(f"{run_dir} holds a run of another config (changed: {changed}); choose another name")
    if previous["plan_fingerprint"] != plan_fingerprint(plan):
        raise ConfigError(
            f"{run_dir} was trained with another plan than the one just solved ({run_dir / PLAN_FILE}); "
            "its expert shards would not fit: choose another name or restore the data it was planned on"
        )


def read_run_record(record: Location) -> dict:
    """A run folder's ``run.json``; raises ConfigError naming it when it is not one gemlab wrote."""
    try:
        previous = json.loads(record.read_text())
        if isinstance(previous["identity"], dict) and all(isinstance(previous[k], str | None) for k in RECORD_KEYS):
            return previous
        reason = "a field has the wrong type"
    except ValueError as error:  # invalid JSON or UTF-8
        reason = f"not valid JSON ({error})"
    except (KeyError, TypeError):
        reason = f"expected an object with {['identity', *RECORD_KEYS]}"
    raise ConfigError(
        f"{record}: {reason}; it records which experiment its folder holds, so the run cannot continue: "
        "restore the file, or train under another name"
    )


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config as one level of dotted keys (``trainer.lr``), to list what differs between two."""
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def with_absolute_paths(cfg: DictConfig) -> DictConfig:
    """A copy whose file paths are absolute: workers run elsewhere, and another folder is another experiment."""
    cfg = cfg.copy()
    cfg.data.path = str(resolve(cfg.data.path))
    cfg.storage_path = storage_location(cfg).uri
    if cfg.affinity.backbone != "init":
        cfg.affinity.backbone = str(resolve(cfg.affinity.backbone))
    if cfg.trainer.init_from is not None:
        cfg.trainer.init_from = str(resolve(cfg.trainer.init_from))
    if cfg.adapt.parent is not None:
        cfg.adapt.parent = Location.parse(cfg.adapt.parent).uri
    return cfg


def prepare(cfg: DictConfig, plan_cache: Location | None = None) -> Prepared:
    """Data, plan and run folder for ``cfg``; raises ConfigError before any worker starts.

    ``plan_cache``: a folder of plans keyed by their inputs (see :func:`cached_plan`).
    """
    from gemlab.engine import adapt  # it builds on this module's functions

    cfg, parent = with_absolute_paths(cfg), None
    if cfg.adapt.parent is not None:  # before the name: the name hashes the domains and experts it resolves
        cfg, parent = adapt.adapted_config(cfg)
    name = run_name(cfg)
    storage = checked_storage(cfg)  # in seconds, before the data are read and the plan is solved
    try:
        mixture = build_mixture(cfg.data, cfg.seed, generate=True, replay=replay_of(cfg.adapt))
    except DataError as error:
        raise ConfigError(f"data: {error}") from None
    plan, adaptation, sources = None, None, {}
    if parent is not None and needs_plan(cfg):
        plan, sources = adapt.adapted_plan(cfg, mixture, parent)
    elif needs_plan(cfg):
        plan = cached_plan(cfg, mixture, plan_cache)
    if parent is not None:
        adaptation = adapt.adaptation(parent, mixture, cfg.moe.num_experts, sources)
    table = routing_table(cfg, mixture, plan)
    check_alignment_parallelism(cfg, table is not None, worker_range(cfg)[1])
    model = build_model(as_plain(cfg), mixture, plan)  # router and model options are checked here, not in a worker
    if cfg.trainer.init_from is not None:  # and the initial weights: a file that does not fit fails here
        load_trunk(model, cfg.trainer.init_from, "trainer.init_from")
    if adaptation is not None:  # so do a parent's
        with Location.parse(adaptation.checkpoint).local_copy() as folder:
            adapt.load_parent_weights(model, folder, adaptation.sources)
    run_dir = storage / name
    run_dir.make_dirs()
    check_resumable(cfg, run_dir, plan)
    parameters = count_parameters(model, as_plain(cfg), mixture).record()
    record = {
        "identity": identity(cfg),
        "identity_digest": identity_digest(cfg),
        "plan_fingerprint": plan_fingerprint(plan),
        PARAMETERS_KEY: parameters,
    }
    if parent is not None:
        record["parent"] = {"run": parent.folder.uri, "checkpoint": parent.checkpoint.name, "step": parent.step}
    (run_dir / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
    if plan is not None:
        (run_dir / PLAN_FILE).write_text(plan.to_json())
    return Prepared(cfg, name, run_dir, mixture, plan, table, adaptation, parameters)
