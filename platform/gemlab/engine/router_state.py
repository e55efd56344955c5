"""Router and criterion state kept equal on every data-parallel rank, step by step.

Some routers and losses keep state that moves with the batches rather than
with gradients: REMoE's adaptive L1 weight follows the observed gate
sparsity, DQRoute's class weights follow per-class difficulty statistics.
Each rank sees its own batches, so without help each rank would drift to
its own state, train a different model, and rank 0 would checkpoint only
its own view. After every optimizer step, :class:`RouterStateSync`
replaces that state by its mass-weighted mean over the world (masses sum to
1, as in :mod:`gemlab.engine.parallel`), on every rank, so every rank holds
the same state and the checkpoint is the world's.

Which tensors, a module says itself, without the engine naming any router:

* a module (anywhere in the model) with ``synchronised_state() -> list[Tensor]``
  has exactly those tensors averaged -- the statistics of the step, not a
  state that an update rule folds them into -- and then, if it has one, its
  ``update_state()`` is called on every rank, which applies its update rule to
  the averaged statistics (REMoE: λ from the world's sparsity);
* the router of every MoE layer and the model's ``criterion`` that declare
  nothing have every persistent floating-point buffer averaged (moving
  averages, which are linear in the batches, so their mean is the world's).

The mean is taken in float64 and written back in the tensor's dtype, so a
float32 value that is equal on every rank comes back bit for bit (a
constant buffer never drifts by rounding). Expert-bank tensors are never
included: an expert's state lives on its owners only.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from gemlab.engine.parallel import WorkerRole
from gemlab.moe.experts import ExpertBank
from gemlab.moe.layer import MoELayer


def _persistent_float_buffers(module: nn.Module) -> list[torch.Tensor]:
    state = module.state_dict(keep_vars=True)  # persistent buffers only (and parameters, left out here)
    parameters = {id(p) for p in module.parameters()}
    return [t for t in state.values() if id(t) not in parameters and t.is_floating_point()]


def synchronised_tensors(model: nn.Module) -> tuple[list[torch.Tensor], list[nn.Module]]:
    """The tensors to average after every step, and the modules whose ``update_state`` follows; raises nothing.

    Every rank of a run builds the same shared modules, so both lists line up across ranks.
    """
    in_experts = {id(m) for bank in model.modules() if isinstance(bank, ExpertBank) for m in bank.modules()}
    tensors: list[torch.Tensor] = []
    updaters: list[nn.Module] = []
    declared: set[int] = set()
    for module in model.modules():
        if id(module) in in_experts or not hasattr(module, "synchronised_state"):
            continue
        tensors.extend(module.synchronised_state())
        declared.update(id(m) for m in module.modules())
        if hasattr(module, "update_state"):
            updaters.append(module)
    stateful = [m.router for m in model.modules() if isinstance(m, MoELayer)]
    criterion = getattr(model, "criterion", None)
    stateful += [criterion] if isinstance(criterion, nn.Module) else []
    for module in stateful:
        if id(module) not in declared:
            tensors.extend(_persistent_float_buffers(module))
    return tensors, updaters


class RouterStateSync:
    """Averages the model's router and criterion state over the world after every step (a collective).

    Called on every rank after ``optimizer.step()``; with one rank (or no process group) only the
    modules' ``update_state`` runs. Raises nothing of its own.
    """

    def __init__(self, model: nn.Module, role: WorkerRole) -> None:
        self.active = role.world_size > 1 and dist.is_available() and dist.is_initialized()
        self.mass = role.mass
        self.tensors, self.updaters = synchronised_tensors(model)

    def __call__(self) -> None:
        """:meth:`average`, then :meth:`update`: what every rank runs after each optimizer step."""
        self.average()
        self.update()

    def average(self) -> None:
        """Replace each synchronised tensor by its mass-weighted mean over the world (a collective, when active)."""
        if not (self.active and self.tensors):
            return
        flat = torch.cat([t.detach().double().reshape(-1) * self.mass for t in self.tensors])
        dist.all_reduce(flat)
        offset = 0
        for tensor in self.tensors:
            tensor.data.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()

    def update(self) -> None:
        """Each declaring module folds the averaged statistics into its state (``update_state``)."""
        for module in self.updaters:
            module.update_state()
