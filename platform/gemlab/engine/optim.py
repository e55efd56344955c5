"""The optimizer and learning-rate schedule of ``trainer.*``: which update rule, at which lr, at every step.

    optimizer = build_optimizer(model, cfg["trainer"])    # AdamW, Adam or SGD; the trunk its own group
    schedule = LRSchedule.from_config(cfg["trainer"])
    schedule.apply(optimizer, step)                         # before optimizer.step() of step 1, 2, ...

The schedule holds no state: the lr of step s is a pure function of s, as
the batches and random streams are (:mod:`gemlab.engine.checkpoint` keeps
none of them). A run resumed at step s sets the lr of step s + 1 from the
step its checkpoint records, and the optimizer's own state (moments,
momentum buffers) comes back with the checkpoint, so the resumed run
continues the very schedule it was on. The schedule's length is
``trainer.decay_steps``, an experiment key, never ``trainer.max_steps``:
raising the step budget continues a run and must not bend its past schedule.

The defaults (AdamW, constant lr, backbone_lr_scale 1) are exactly the
optimizer gemlab always used: ``torch.optim.AdamW(model.parameters(), lr,
weight_decay)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gemlab.engine.config import ConfigError
from gemlab.models.common import trunk_parameters


def parameter_groups(model: nn.Module, lr: float, backbone_lr_scale: float) -> list[dict[str, Any]]:
    """One group of every parameter at ``lr``, or, when the trunk's lr is scaled, the trunk's group and the rest's.

    Each group records its ``base_lr`` (what the schedule multiplies). What the trunk is, the model says
    (``trunk_names``); a frozen trunk (scale 0) keeps its parameters in the optimizer at lr 0, so their
    state and the checkpoint's layout do not depend on the scale. Raises ConfigError for a scaled trunk
    of a model that declares none.
    """
    if backbone_lr_scale == 1:
        return [{"params": list(model.parameters()), "lr": lr, "base_lr": lr, "name": "all"}]
    try:
        trunk = trunk_parameters(model)
    except TypeError as error:
        raise ConfigError(f"trainer.backbone_lr_scale={backbone_lr_scale}: {error}") from None
    trunk_ids = {id(p) for _, p in trunk}
    rest = [p for p in model.parameters() if id(p) not in trunk_ids]
    scaled = lr * backbone_lr_scale
    return [
        {"params": [p for _, p in trunk], "lr": scaled, "base_lr": scaled, "name": "trunk"},
        {"params": rest, "lr": lr, "base_lr": lr, "name": "rest"},
    ]


def build_optimizer(model: nn.Module, trainer: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``trainer.optimizer`` over ``model``'s parameter groups (:func:`parameter_groups`).

    AdamW decouples weight decay from the gradient (Loshchilov & Hutter, 2019); Adam and SGD add
    ``weight_decay * w`` to the gradient, as torch defines them. SGD uses ``trainer.momentum``
    (no Nesterov, no dampening). Raises ConfigError for an unknown optimizer (config validation
    refuses it first) or a scaled trunk of a model without one.
    """
    groups = parameter_groups(model, trainer["lr"], trainer["backbone_lr_scale"])
    name, decay = trainer["optimizer"], trainer["weight_decay"]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=trainer["lr"], weight_decay=decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=trainer["lr"], weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=trainer["lr"], momentum=trainer["momentum"], weight_decay=decay)
    raise ConfigError(f"config: trainer.optimizer={name!r}: expected adamw, adam or sgd")


@dataclass(frozen=True)
class LRSchedule:
    """The lr factor of each step (1-based), multiplying every group's ``base_lr``.

    With u = s - 1 updates done before step s, W = ``warmup_steps`` and t = u - W:

    * warm-up (u < W): (u + 1) / W, a straight line reaching the full lr at step W;
    * ``constant``: 1;
    * ``cosine``: (1 + cos(π · min(t, D) / D)) / 2 with D = ``decay_steps``: 1 at the first step
      after warm-up, 0 from step W + D + 1 on (SGDR's annealing, Loshchilov & Hutter, 2017, without restarts);
    * ``step``: ``decay_factor`` ** ⌊t / D⌋: the lr drops every D steps after warm-up.
    """

    kind: str = "constant"
    warmup_steps: int = 0
    decay_steps: int | None = None
    decay_factor: float = 0.1

    @classmethod
    def from_config(cls, trainer: Mapping[str, Any]) -> LRSchedule:
        """The schedule of ``trainer``'s keys (validated by :func:`gemlab.engine.config.validate`); raises nothing."""
        return cls(trainer["schedule"], trainer["warmup_steps"], trainer["decay_steps"], trainer["decay_factor"])

    def factor(self, step: int) -> float:
        """The lr multiplier of ``step`` (1 = the first update); raises nothing."""
        done = step - 1
        if done < self.warmup_steps:
            return (done + 1) / self.warmup_steps
        since = done - self.warmup_steps
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(since, self.decay_steps) / self.decay_steps))
        if self.kind == "step":
            return self.decay_factor ** (since // self.decay_steps)
        return 1.0

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set every group's lr to its ``base_lr`` times the factor of ``step``; raises nothing."""
        factor = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
