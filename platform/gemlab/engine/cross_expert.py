"""The cross-expert matrix: every domain evaluated through every expert, from a run's checkpoint.

For a run whose routers can be forced to one expert -- those with a domain →
expert table (the spec is expert-parallel), and MoGE's metadata router (the
paper's forced-expert matrix, Fig. 3) -- a full model (all experts) is
loaded from the checkpoint's shards, and every MoE layer's router is forced
to send every domain to expert j, for each j. For a table router the
diagonal of the plan -- each domain through its own expert -- is the run's
accuracy; the rest shows how specialised the experts became. The rows are
the data's domains (MoGE's paper uses the domains its router discovered).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from omegaconf import DictConfig
from torch import nn

from gemlab.engine.checkpoint import read_checkpoint
from gemlab.engine.config import as_plain, identity_digest
from gemlab.engine.data import build_mixture
from gemlab.engine.model import build_model, checkpointed_experts, configured_router
from gemlab.engine.prepare import PLAN_FILE, plan_fingerprint, read_plan
from gemlab.engine.resume import find_resume_point
from gemlab.engine.tasks import task_of
from gemlab.storage import Location


@contextmanager
def forced_expert(model: nn.Module, expert: int) -> Iterator[nn.Module]:
    """Inside the block, every part of ``model`` routed by a domain -> expert table uses ``expert``; restored on exit.

    Such parts say so with a ``forced(expert)`` context manager: the routers of MoE layers (GEM's) and
    GEMGR-DINO's per-expert query sets. Each is restored even when the block (or forcing a later part)
    raises. Only for models routed by a table; raises ValueError for an expert outside the model's.
    """
    with ExitStack() as forced:
        for module in model.modules():
            force = getattr(module, "forced", None)
            if callable(force):
                forced.enter_context(force(expert))
        yield model


def _shared_only_switches(model: nn.Module) -> list:
    return [m.shared_expert_only for m in model.modules() if callable(getattr(m, "shared_expert_only", None))]


def has_shared_expert_only(model: nn.Module) -> bool:
    """Whether ``model`` has routers that can send every token to their layer's shared expert alone."""
    return bool(_shared_only_switches(model))


@contextmanager
def shared_expert_only(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every router with a shared expert sends every token to it alone (MoGE-SE); restored on exit.

    Such routers say so with a ``shared_expert_only()`` context manager (MoGE's metadata router). Each is
    restored even when the block raises. Raises what a router's switch raises (ValueError for a router built
    without its shared expert).
    """
    with ExitStack() as switched:
        for switch in _shared_only_switches(model):
            switched.enter_context(switch())
        yield model


def can_force(model: nn.Module) -> bool:
    """Whether some part of ``model`` can be forced to one expert (exposes ``forced``); raises nothing."""
    return any(callable(getattr(module, "forced", None)) for module in model.modules())


def cross_expert_accuracy(cfg: DictConfig, run_dir: Location, checkpoint: Location) -> dict[str, list[float]] | None:
    """Domain name -> accuracy through expert 0..E-1 on the eval split; None for routers that cannot be forced.

    Raises CheckpointMismatch or CheckpointDamaged for a checkpoint that does not fit or load.
    """
    if not configured_router(cfg).forcible:
        return None
    mixture = build_mixture(cfg.data, cfg.seed)
    plan_file = run_dir / PLAN_FILE
    plan = read_plan(plan_file) if plan_file.is_file() else None
    model = build_model(as_plain(cfg), mixture, plan)
    if not can_force(model):  # a model without experts (Mixed-DINO) under a forcible router
        return None
    expected = {
        "plan_fingerprint": plan_fingerprint(plan),
        "num_experts": checkpointed_experts(cfg),
        "identity_digest": identity_digest(cfg),
    }
    with checkpoint.local_copy() as folder:
        read_checkpoint(folder, model, None, expected)
    task = task_of(mixture, cfg.objective)
    data = task.data(mixture, cfg.data.image_size)
    domains = range(len(mixture.domains))
    matrix: dict[str, list[float]] = {name: [] for name in mixture.names}
    for expert in range(cfg.moe.num_experts):
        with forced_expert(model, expert):
            results = task.evaluate(model, data, domains, cfg.data.eval_split, cfg.trainer.eval_batch_size)
        for d, result in results.items():
            matrix[mixture.names[d]].append(result[task.metric])
    return matrix


def with_cross_expert(cfg: DictConfig, run_dir: Location, history: list[dict]) -> list[dict]:
    """``history`` with the cross-expert matrix added to its last record (when the run has a table)."""
    resume = find_resume_point(run_dir)
    if not history or resume.folder is None or resume.step != history[-1]["step"]:
        return history
    matrix = cross_expert_accuracy(cfg, run_dir, resume.folder)
    return history if matrix is None else [*history[:-1], {**history[-1], "cross_expert": matrix}]
