"""Per-domain evaluation: accuracy, loss, and which experts the domain's tokens reached.

Each domain is evaluated on one worker only -- under expert parallelism, the
worker holding the domain's expert (the only one that can run it) -- and
rank 0 gathers the results. The expert load is the routing heatmap's row:
the fraction of the domain's routed tokens each expert received, summed over
the model's MoE layers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gemlab.engine.data import DomainTensors


def model_inputs(batch: dict[str, torch.Tensor], with_labels: bool) -> dict[str, torch.Tensor | None]:
    """The side information a router may use: domain always, labels only in training, metadata if present."""
    return {
        "domain": batch["domain"],
        "labels": batch["labels"] if with_labels else None,
        "metadata": batch.get("metadata"),
    }


@torch.no_grad()
def evaluate_domains(
    model: nn.Module, tensors: DomainTensors, domains: Iterable[int], split: str, batch_size: int
) -> dict[int, dict[str, Any]]:
    """Domain id -> {accuracy, loss, expert_load} on ``split``."""
    was_training = model.training
    model.eval()
    results = {}
    for domain in domains:
        part = tensors.split(domain, split)
        total = len(part["labels"])
        correct, loss, load = 0, 0.0, None
        for start in range(0, total, batch_size):
            batch = {k: v[start : start + batch_size] for k, v in part.items()}
            batch["domain"] = torch.full((len(batch["labels"]),), domain)
            out = model(batch["images"], **model_inputs(batch, with_labels=False))
            correct += int((out.logits.argmax(dim=1) == batch["labels"]).sum())
            loss += float(F.cross_entropy(out.logits, batch["labels"], reduction="sum"))
            counts = sum(routing.counts.detach().double() for routing in out.routings)
            load = counts if load is None else load + counts
        share = (load / load.sum()).tolist() if load is not None and load.sum() > 0 else []
        results[domain] = {"accuracy": correct / total, "loss": loss / total, "expert_load": share}
    model.train(was_training)
    return results
