"""How many parameters a run's model holds, how many are experts, and how many one token passes through.

    counts = count_parameters(model, cfg, mixture)   # on the driver, the full model prepare() built
    counts.record()   # experiment=tiny: {"total": 23754, "experts": 8384, "active": 19562.0, "expert_hidden": 64, ...}

Every run records these in ``run.json`` (under ``parameters``) and as rows of
``results.parquet`` (:data:`~gemlab.results_schema.PARAMETER_METRICS`), so
that runs compared at a fixed budget (``moe.param_budget``) can show it.

* **total** -- every parameter of the full model, all experts included (the
  driver builds it whole; an expert-parallel worker holds fewer).
* **experts** -- the members of every expert bank (:class:`ExpertBank`):
  the routed FFN experts of all MoE layers, and whatever else a model keeps
  per expert (GEMGR-DINO's query sets, DQRoute's classifiers, STAR's heads).
  A shared expert (MoGE's) runs on every token, so it is not among them.
* **active** -- what one token passes through: the parameters outside the
  banks, plus, for each bank, its experts per token × its parameters per
  expert. An MoE layer's experts per token is *measured*: the rows its
  router dispatches per token on one batch drawn as the run's sampler draws
  step 1 (seed, rank 0) from the whole mixture, in evaluation mode with the
  weights training starts from. So GEM counts 1 and top-k k (less the
  tokens over capacity); GEM without rounding the mean number of experts a
  domain is split over; REMoE and MoE++ their gates' sparsity at that
  point, which their losses then steer (REMoE towards ``k``). Soft MoE's
  slots mix every token into every expert, so it counts every expert. A
  bank outside an MoE layer counts whole: DQRoute fuses all its classifiers
  and STAR mixes all its heads; a GEMGR-DINO image uses one query set, so
  there the count is an upper bound.

The measurement decodes the training split of the batch's domains once on
the driver (cheap for the digit domains; for large detection data it is the
time of decoding those splits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from gemlab.data.mixture import DomainMixture
from gemlab.data.sampler import MixtureSampler
from gemlab.engine.tasks import task_of
from gemlab.moe.experts import ExpertBank
from gemlab.moe.layer import MoELayer
from gemlab.moe.routing import SlotRouting

RECORD_KEY = "parameters"  # run.json's key of the counts, beside "identity"


@dataclass(frozen=True)
class ParameterCounts:
    """A model's parameter counts (see the module docstring for what each one counts)."""

    total: int
    experts: int
    active: float  # a mean over the measured batch's tokens, so not always whole
    expert_hidden: int | None  # the MoE layers' experts' hidden width when they share one; None: no MoE layers
    experts_per_token: tuple[float, ...]  # per MoE layer, in the model's order: what ``active`` counted

    def record(self) -> dict[str, Any]:
        """The counts as ``run.json`` stores them (plain numbers and a list); raises nothing."""
        return {**asdict(self), "experts_per_token": list(self.experts_per_token)}


def _size(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _dispatched_per_token(layer: MoELayer, routing: Any, tokens: int) -> float:
    """Experts one token of ``layer`` passes through on average: dispatched rows per token, every expert for slots."""
    if isinstance(routing, SlotRouting):
        return float(layer.experts.num_experts)
    return sum(routing.segment_sizes) / tokens


@torch.no_grad()
def measured_experts_per_token(model: nn.Module, cfg: Mapping[str, Any], mixture: DomainMixture) -> list[float]:
    """Each MoE layer's experts per token on the batch the sampler draws at step 1 (seed, rank 0), in eval mode.

    A layer the batch does not reach counts 0. The model's mode and the global torch RNG are restored
    afterwards. Raises what the task's data and loss raise for data that do not fit the model
    (ConfigError, ValueError).
    """
    layers = [module for module in model.modules() if isinstance(module, MoELayer)]
    if not layers:
        return []
    seen: dict[int, float] = {}

    def note(layer: MoELayer, args: tuple, kwargs: dict, output: tuple) -> None:
        x = args[0] if args else kwargs["x"]
        seen[id(layer)] = _dispatched_per_token(layer, output[1], x[..., 0].numel())  # (B, T, D) or (B, D)

    task = task_of(mixture, cfg["objective"])
    data = task.data(mixture, cfg["data"]["image_size"])
    pairs = MixtureSampler(mixture, cfg["trainer"]["batch_size"], cfg["seed"]).batch(1)
    hooks = [layer.register_forward_hook(note, with_kwargs=True) for layer in layers]
    was_training = model.training
    try:
        with torch.random.fork_rng():
            torch.manual_seed(cfg["seed"])
            task.loss(model.eval(), data.batch(pairs))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return [seen.get(id(layer), 0.0) for layer in layers]


def count_parameters(model: nn.Module, cfg: Mapping[str, Any], mixture: DomainMixture) -> ParameterCounts:
    """Total, expert and active parameters of the full ``model`` of ``cfg`` (see the module docstring).

    Raises what :func:`measured_experts_per_token` raises.
    """
    per_token = measured_experts_per_token(model, cfg, mixture)
    layers = [module for module in model.modules() if isinstance(module, MoELayer)]
    routed = {id(layer.experts): share for layer, share in zip(layers, per_token, strict=True)}
    total, experts, active_experts = _size(model), 0, 0.0
    for bank in (module for module in model.modules() if isinstance(module, ExpertBank)):
        size = _size(bank)
        experts += size
        per_expert = size / max(len(bank.members), 1)
        active_experts += routed[id(bank)] * per_expert if id(bank) in routed else size
    widths = {layer.experts.hidden for layer in layers}
    return ParameterCounts(
        total=total,
        experts=experts,
        active=total - experts + active_experts,
        expert_hidden=widths.pop() if len(widths) == 1 else None,
        experts_per_token=tuple(per_token),
    )
