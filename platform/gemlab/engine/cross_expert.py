"""The cross-expert matrix: every domain evaluated through every expert, from a run's checkpoint.

For a run whose router has a domain → expert table (gem, random): a full
model (all experts) is loaded from the checkpoint's shards, and the table is
forced to send every domain to expert j, for each j. The diagonal of the
plan -- each domain through its own expert -- is the run's accuracy; the
rest shows how specialised the experts became.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from gemlab.engine.checkpoint import read_checkpoint
from gemlab.engine.config import as_plain, identity_digest
from gemlab.engine.data import DomainTensors, build_mixture
from gemlab.engine.evaluate import evaluate_domains
from gemlab.engine.model import build_model, routing_table
from gemlab.engine.prepare import PLAN_FILE, plan_fingerprint, read_plan
from gemlab.engine.resume import find_resume_point
from gemlab.moe.routers.gem import GEMRouter
from gemlab.storage import Location


def cross_expert_accuracy(cfg: DictConfig, run_dir: Location, checkpoint: Location) -> dict[str, list[float]] | None:
    """Domain name -> accuracy through expert 0..E-1 on the eval split; None for routers without a table."""
    mixture = build_mixture(cfg.data, cfg.seed)
    plan_file = run_dir / PLAN_FILE
    plan = read_plan(plan_file) if plan_file.is_file() else None
    if routing_table(cfg, mixture, plan) is None:
        return None
    model = build_model(as_plain(cfg), mixture, plan)
    expected = {
        "plan_fingerprint": plan_fingerprint(plan),
        "num_experts": cfg.moe.num_experts,
        "identity_digest": identity_digest(cfg),
    }
    with checkpoint.local_copy() as folder:
        read_checkpoint(folder, model, None, expected)
    routers = [m for m in model.modules() if isinstance(m, GEMRouter)]
    tensors = DomainTensors(mixture, cfg.data.image_size)
    domains = range(len(mixture.domains))
    matrix: dict[str, list[float]] = {name: [] for name in mixture.names}
    originals = [router.table.clone() for router in routers]
    for expert in range(cfg.moe.num_experts):
        for router in routers:
            router.table = torch.full_like(router.table, expert)
        results = evaluate_domains(model, tensors, domains, cfg.data.eval_split, cfg.trainer.eval_batch_size)
        for d, result in results.items():
            matrix[mixture.names[d]].append(result["accuracy"])
    for router, table in zip(routers, originals, strict=True):
        router.table = table
    return matrix


def with_cross_expert(cfg: DictConfig, run_dir: Location, history: list[dict]) -> list[dict]:
    """``history`` with the cross-expert matrix added to its last record (when the run has a table)."""
    resume = find_resume_point(run_dir)
    if not history or resume.folder is None or resume.step != history[-1]["step"]:
        return history
    matrix = cross_expert_accuracy(cfg, run_dir, resume.folder)
    return history if matrix is None else [*history[:-1], {**history[-1], "cross_expert": matrix}]
