"""Adapting a trained run: more domains (and experts) on top of a finished model, without reshuffling it.

GEM's plan is what lets a trained model take a new dataset: re-plan with the
old datasets fixed where they are, send the new ones where capacity and
affinity allow -- or to new experts -- and train on. A run whose config sets
``adapt.parent`` is such a continuation:

1. *Config* (:func:`adapted_config`): the parent's ``run.json`` fixes what
   the child must share with it -- model, router, data source, planner,
   affinity, seed -- and the child's domains are the parent's followed by
   ``adapt.add``, its experts the parent's plus ``adapt.new_experts``. Only
   ``trainer.*`` (the adaptation's own budget and lr) and ``tag`` may differ.
2. *Plan* (:func:`adapted_plan`): the costs are recomputed with the parent's
   anchors, which are refitted from the parent's inputs and checked against
   the parent's plan (a changed stem or dataset is refused, not silently
   re-planned). A new expert's anchor is a k-means++ centre of the added
   domains' features. :func:`gemlab.plan.incremental.replan` then keeps every
   old domain on its expert when capacity allows, and else re-plans and
   records each move.
3. *Weights* (:func:`load_parent_weights`, on every worker before its first
   step): the parent's newest verified checkpoint, tensor by tensor. A tensor
   that grew (the classifier's rows when a domain brings classes, a learned
   gate's rows when experts are added) keeps the parent's values in its
   leading part; a new expert starts as a copy of its most affine old expert
   (``adapt.init=copy``: the old anchor closest to its own) or as drawn
   (``scratch``). The optimizer starts afresh.

Token-routed baselines have no plan: the added domains simply join their
mixture, and their weights carry over the same way, so adaptability and
forgetting (:mod:`gemlab.engine.forgetting`) compare like with like. The
parent's folder is only read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from gemlab.data.collection import load_collection
from gemlab.data.mixture import DomainMixture
from gemlab.engine.checkpoint import SHARED_FILE, CheckpointMismatch, expert_file, load_shard, read_history
from gemlab.engine.config import ConfigError, identity
from gemlab.engine.data import build_mixture, collection_index
from gemlab.engine.model import needs_plan
from gemlab.engine.parallel import expert_parameters
from gemlab.engine.prepare import (
    PLAN_FILE,
    RUN_FILE,
    assignment_problem,
    flatten,
    plan_fingerprint,
    read_plan,
    read_run_record,
    strategy_options,
    task_features,
)
from gemlab.engine.resume import find_resume_point
from gemlab.plan.affinity import CostMatrix, cosine_affinity, expert_anchors
from gemlab.plan.errors import PlanError
from gemlab.plan.incremental import replan
from gemlab.plan.plan import Plan
from gemlab.storage import Location

# Keys a child may set otherwise than its parent (beside data.domains and moe.num_experts, which it extends).
FREE_KEYS = ("trainer.", "adapt.", "tag")
COST_TOLERANCE = 1e-9  # the refitted costs of the parent's domains must equal its plan's to this


@dataclass(frozen=True)
class Parent:
    """A finished run as its child needs it: its record, plan, newest verified checkpoint and last scores."""

    folder: Location
    identity: dict[str, Any]
    plan: Plan | None
    checkpoint: Location
    step: int
    domains: tuple[str, ...]  # as its data.domains names them, in order
    metric: str  # the task metric of its evaluations (accuracy, ap)
    scores: dict[str, float]  # evaluated domain (a few-shot view's own name) -> its last evaluation's score

    @property
    def num_experts(self) -> int:
        return self.identity["moe"]["num_experts"]


@dataclass(frozen=True)
class Adaptation:
    """What every worker of a child run needs of its parent (it travels with the plan through the object store)."""

    checkpoint: str  # the parent's checkpoint folder (a path or a storage URI)
    sources: dict[int, int | None]  # expert -> the parent's expert it starts from (None: as drawn)
    parent_scores: dict[str, float]  # old domain -> the parent's last score (forgetting is measured against it)
    added: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """What each evaluation record carries for :mod:`gemlab.engine.forgetting`."""
        return {"parent_scores": dict(self.parent_scores), "added": list(self.added)}


def read_parent(where: str) -> Parent:
    """The run folder ``where`` as a parent; raises ConfigError naming ``adapt.parent`` when it cannot be one.

    Refused: a folder without a gemlab ``run.json``, a run without a checkpoint that verifies, a run whose
    ``plan.json`` is not the plan it was trained with, a leave-one-domain-out run, and an adapted run.
    """
    key = f"adapt.parent={where}"
    folder = Location.parse(where)
    if not (folder / RUN_FILE).is_file():
        raise ConfigError(f"{key}: no {RUN_FILE} there; name the folder of a run that gemlab train wrote")
    record = read_run_record(folder / RUN_FILE)
    if record["identity"]["data"].get("holdout") is not None:
        raise ConfigError(f"{key}: a leave-one-domain-out run (data.holdout) cannot be adapted; train one without")
    if record["identity"].get("adapt", {}).get("parent") is not None:
        raise ConfigError(
            f"{key}: an adapted run itself (its anchors were not fitted on its own domains); adapt its parent "
            "with every added domain at once"
        )
    resume = find_resume_point(folder)
    if resume.folder is None:
        reason = "; ".join(resume.skipped) or "it has none"
        raise ConfigError(f"{key}: no checkpoint that verifies ({reason})")
    plan = read_plan(folder / PLAN_FILE) if (folder / PLAN_FILE).is_file() else None
    if plan_fingerprint(plan) != record["plan_fingerprint"]:
        raise ConfigError(f"{key}: {folder / PLAN_FILE} is not the plan the run was trained with")
    last = read_history(resume.folder)[-1]
    metric = last["metric"]
    scores = {name: float(result[metric]) for name, result in last["domains"].items()}
    data = record["identity"]["data"]
    domains = data["domains"] or load_collection(collection_index(data, record["identity"]["seed"], False))[0].names
    return Parent(folder, record["identity"], plan, resume.folder, resume.step, tuple(domains), metric, scores)


def adapted_config(cfg: DictConfig) -> tuple[DictConfig, Parent]:
    """``cfg`` with the parent's domains followed by ``adapt.add``, and its experts plus the new ones; the parent.

    ``cfg.data.domains`` may be null, the parent's or the extended list, ``cfg.moe.num_experts`` the
    parent's or the extended count. Raises ConfigError naming the key for an unusable parent, an added
    domain the parent already has, any other key that differs from the parent's (listed with both
    values), and what cannot be adapted: class-level plans, ``trainer.init_from``, more new experts than
    added domains under a plan, ``adapt.init=copy`` of new experts without a plan.
    """
    parent = read_parent(cfg.adapt.parent)
    added = list(cfg.adapt.add)
    again = [name for name in added if name in parent.domains]
    if again:
        raise ConfigError(f"adapt.add: {again} are domains of the parent already (it has {list(parent.domains)})")
    domains = [*parent.domains, *added]
    experts = parent.num_experts + cfg.adapt.new_experts
    given = None if cfg.data.domains is None else list(cfg.data.domains)
    if given not in (None, list(parent.domains), domains):
        raise ConfigError(
            f"data.domains={given}: an adapted run trains the parent's domains {list(parent.domains)} and then "
            f"adapt.add; leave data.domains as the parent's"
        )
    if cfg.moe.num_experts not in (parent.num_experts, experts):
        raise ConfigError(
            f"moe.num_experts={cfg.moe.num_experts}: the parent has {parent.num_experts} experts; "
            "add experts with adapt.new_experts"
        )
    if cfg.trainer.init_from is not None:
        raise ConfigError("trainer.init_from: an adapted run starts from its parent's weights; leave it null")
    cfg = cfg.copy()
    cfg.data.domains, cfg.moe.num_experts = domains, experts
    _check_same_as_parent(cfg, parent)
    planned = needs_plan(cfg)
    if planned and cfg.plan.level != "domain":
        raise ConfigError("adapt.parent: class-level plans are not re-planned; adapt a run with a domain-level plan")
    if planned and cfg.adapt.new_experts > len(added):
        raise ConfigError(
            f"adapt.new_experts={cfg.adapt.new_experts}: more than the {len(added)} added domain(s); a new "
            "expert's anchor is fitted on the added domains, and an expert without a domain would never train"
        )
    if not planned and cfg.adapt.new_experts and cfg.adapt.init == "copy":
        raise ConfigError(
            f"adapt.init=copy: router={cfg.router.name} follows no plan, so no old expert is the most affine to a "
            "new one; set adapt.init=scratch"
        )
    return cfg, parent


def _may_differ(key: str, parent_value: Any, added: list[str]) -> bool:
    """Whether a child may set ``key`` otherwise: the free keys, the extended ones, an added domain's new shots."""
    if key.startswith(FREE_KEYS) or key in ("data.domains", "moe.num_experts"):
        return True
    return key.startswith("data.shots.") and key.removeprefix("data.shots.") in added and parent_value is None


def _check_same_as_parent(cfg: DictConfig, parent: Parent) -> None:
    """Raises ConfigError listing every key that differs from the parent's though it may not (:func:`_may_differ`)."""
    old, new = flatten(parent.identity), flatten(identity(cfg))
    added = list(cfg.adapt.add)
    changed = {
        key: (old.get(key), new.get(key))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and not _may_differ(key, old.get(key), added)
    }
    if changed:
        listed = ", ".join(f"{key}: {before!r} -> {after!r}" for key, (before, after) in changed.items())
        raise ConfigError(
            f"adapt.parent={cfg.adapt.parent}: an adapted run keeps its parent's config but for trainer.*, "
            f"tag, adapt.* and the added domains' data.shots; changed: {listed}"
        )


def with_domains_resolved(cfg: DictConfig, trained: dict[str, Any] | None) -> DictConfig:
    """An adapted run's composed ``cfg`` with the domains and expert count its run.json identity records.

    Composing an adapted run's overrides again gives the parent's domains and experts; preparing it
    extended them (:func:`adapted_config`). Reading such a run back must not depend on its parent still
    being there, so the record is taken instead. Other configs, and a run without a record (None), are
    returned as they are.
    """
    if cfg.adapt.parent is None or trained is None:
        return cfg
    cfg = cfg.copy()
    cfg.data.domains, cfg.moe.num_experts = trained["data"]["domains"], trained["moe"]["num_experts"]
    return cfg


def _parent_anchors(cfg: DictConfig, parent: Parent) -> np.ndarray:
    """The parent's expert anchors, refitted from its own inputs; raises ConfigError if its costs do not come back.

    The parent fitted its anchors on its domains' mean stem features (or on their calibration samples when
    it had more experts than domains), so the same stem, data and seed give the same anchors -- and so
    exactly its plan's costs, which is checked.
    """
    parent_cfg = cfg.copy()
    parent_cfg.data.domains, parent_cfg.moe.num_experts = list(parent.domains), parent.num_experts
    parent_cfg.data.shots = {name: k for name, k in (cfg.data.shots or {}).items() if name in parent.domains}
    means, _, samples = task_features(parent_cfg, build_mixture(parent_cfg.data, cfg.seed))
    pool = samples if parent.num_experts > len(parent.domains) else means
    anchors = expert_anchors(pool, parent.num_experts, cfg.seed)
    costs = cosine_affinity(means, anchors)
    if costs.shape != parent.plan.costs.shape or not np.allclose(costs, parent.plan.costs, rtol=0, atol=COST_TOLERANCE):
        raise ConfigError(
            f"adapt.parent={cfg.adapt.parent}: the parent's domains no longer give its plan's costs; "
            "its data or initial weights changed since it was trained"
        )
    return anchors


def adapted_plan(cfg: DictConfig, mixture: DomainMixture, parent: Parent) -> tuple[Plan, dict[int, int | None]]:
    """The child's plan (the parent's kept where capacity allows) and each new expert's source expert.

    ``details["adapt"]`` records the parent, the added domains, whether every old assignment was kept,
    each move (task, expert before, expert after) and each new expert's source. Raises ConfigError
    naming ``adapt.parent`` or the planner's key when the parent cannot be re-planned.
    """
    old_experts, added = parent.num_experts, list(cfg.adapt.add)
    anchors = _parent_anchors(cfg, parent)
    means, names, _ = task_features(cfg, mixture)
    try:
        if cfg.adapt.new_experts:
            new_anchors = expert_anchors(means[len(parent.domains) :], cfg.adapt.new_experts, cfg.seed)
            anchors = np.vstack([anchors, new_anchors])
        expert_names = [*parent.plan.expert_names, *(f"expert{j}" for j in range(old_experts, len(anchors)))]
        costs = CostMatrix(cosine_affinity(means, anchors), names, expert_names)
        problem = assignment_problem(cfg, costs, mixture)
        outcome = replan(parent.plan, problem, cfg.plan.strategy, strategy_options(cfg))
    except PlanError as error:
        raise ConfigError(f"adapt.parent={cfg.adapt.parent}: re-planning failed: {error}") from None
    sources = expert_sources(anchors, old_experts, cfg.adapt.init)
    details = {
        "parent": parent.folder.uri,
        "parent_step": parent.step,
        "added": added,
        "kept_all": outcome.kept_all,
        "moved": [list(move) for move in outcome.moved],
        "new_experts": {expert_names[j]: None if s is None else expert_names[s] for j, s in sources.items()},
    }
    plan = dataclasses.replace(outcome.plan, details={**outcome.plan.details, "adapt": details})
    return plan, sources


def expert_sources(anchors: np.ndarray, old_experts: int, init: str) -> dict[int, int | None]:
    """New expert -> the old expert whose anchor is closest in cosine to its own (``copy``), or None (``scratch``)."""
    new = range(old_experts, len(anchors))
    if init == "scratch" or not len(new):
        return {j: None for j in new}
    closest = cosine_affinity(anchors[old_experts:], anchors[:old_experts]).argmax(axis=1)
    return {j: int(k) for j, k in zip(new, closest.tolist(), strict=True)}


def adaptation(
    parent: Parent, mixture: DomainMixture, num_experts: int, new_sources: dict[int, int | None]
) -> Adaptation:
    """What the workers need: old experts start from themselves, new ones from ``new_sources`` (default: as drawn).

    The added domains are named as the child evaluates them (a few-shot view's own name: ``noise-5shot``).
    """
    sources = {j: j if j < parent.num_experts else new_sources.get(j) for j in range(num_experts)}
    added = mixture.names[len(parent.domains) :]
    return Adaptation(parent.checkpoint.uri, sources, dict(parent.scores), added)


def _grown(current: torch.Tensor, saved: torch.Tensor, key: str) -> torch.Tensor:
    """``saved`` where the shapes agree; else ``current`` with ``saved`` in its leading part along the one grown axis.

    Raises CheckpointMismatch naming ``key`` for any other difference of shape.
    """
    if current.shape == saved.shape:
        return saved
    grown = [axis for axis, (now, then) in enumerate(zip(current.shape, saved.shape, strict=False)) if now != then]
    if current.dim() != saved.dim() or len(grown) != 1 or saved.shape[grown[0]] > current.shape[grown[0]]:
        raise CheckpointMismatch(
            f"parent checkpoint: {key} has shape {tuple(saved.shape)}, the adapted model {tuple(current.shape)}"
        )
    merged = current.clone()
    merged.narrow(grown[0], 0, saved.shape[grown[0]]).copy_(saved)
    return merged


@torch.no_grad()
def load_parent_weights(model: nn.Module, folder: Path, sources: dict[int, int | None]) -> None:
    """The parent's weights into ``model`` (this worker's share): shared tensors, and each held expert's source.

    Raises CheckpointMismatch for a parent tensor the model lacks or cannot hold, CheckpointDamaged for
    a shard that does not load.
    """
    state = model.state_dict()
    shared = load_shard(folder / SHARED_FILE)["model"]
    stray = sorted(set(shared) - set(state))
    if stray:
        raise CheckpointMismatch(f"parent checkpoint {folder}: the adapted model has no {stray[:5]}")
    for key, saved in shared.items():
        state[key] = _grown(state[key], saved, key)
    for expert, named in expert_parameters(model).items():
        source = sources.get(expert)
        if source is None:
            continue
        shard = load_shard(folder / expert_file(source))["model"]
        for name, _ in named:
            head, _, tail = name.rpartition(f"members.{expert}.")
            state[name] = _grown(state[name], shard[f"{head}members.{source}.{tail}"], name)
    model.load_state_dict(state, strict=True)
