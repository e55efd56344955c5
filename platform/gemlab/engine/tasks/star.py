"""STAR (seed 003) as a training objective: self-supervised invariant + equivariant learning, probed linearly.

On classification data, ``objective=star`` trains without labels. Each step
draws two augmented views of every image (:class:`gemlab.data.views.ViewAugment`,
seeded by the worker's per-step seed), runs both through the model at once,
and minimises

    L = λ_inv · L_NT-Xent(z_inv(v₁), z_inv(v₂)) + λ_eq · L_AugSelf(φ(z_eq(v₁), z_eq(v₂)), ω₂ − ω₁)

(:func:`~gemlab.moe.star.nt_xent`, SimCLR Eq. 1; :func:`~gemlab.moe.star.transformation_regression`,
AugSelf's loss), z_inv and z_eq being STAR's two soft mixtures of the
projection heads. Labels are read only by the evaluation: a linear probe
(:mod:`.probe`) fitted on the frozen trunk's features of every domain's
training split, scored on each domain's evaluation split. Its accuracy,
``probe_accuracy``, is the task metric that progress lines, Tune and
``gemlab report`` rank runs by; ``cca``, the mean canonical correlation of
the two embeddings on the same images, is the redundancy STAR sets out to
lower.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from gemlab.data.mixture import DomainMixture
from gemlab.data.views import ViewAugment
from gemlab.engine.config import ConfigError
from gemlab.engine.tasks.classification import DomainTensors
from gemlab.engine.tasks.probe import LinearProbe
from gemlab.moe.star import TASKS, canonical_correlation, nt_xent, transformation_regression
from gemlab.results_schema import CCA, PROBE_ACCURACY

OPTIONS = (
    "invariant_weight", "equivariant_weight", "temperature",  # the loss
    "crop_scale_min", "max_rotation", "jitter",  # the views
    "probe_weight_decay",  # the evaluation
)  # fmt: skip


class STARTask:
    """Built from the ``objective`` config (``name: star`` and :data:`OPTIONS`); raises ConfigError naming
    ``objective.<key>`` for a missing, unknown or out-of-range key."""

    name, metric = "star", PROBE_ACCURACY

    def __init__(self, options: Mapping[str, Any]) -> None:
        given = {k: v for k, v in options.items() if k != "name"}
        unknown, missing = sorted(set(given) - set(OPTIONS)), [k for k in OPTIONS if k not in given]
        if unknown or missing:
            raise ConfigError(f"objective.{(unknown or missing)[0]}: objective=star reads exactly {', '.join(OPTIONS)}")
        number = {key: _number(key, given[key]) for key in OPTIONS}
        for key in ("invariant_weight", "equivariant_weight", "probe_weight_decay"):
            if number[key] < 0:
                raise ConfigError(f"objective.{key}={given[key]!r}: expected a number >= 0")
        if number["temperature"] <= 0:
            raise ConfigError(f"objective.temperature={given['temperature']!r}: expected a number > 0")
        if number["invariant_weight"] == number["equivariant_weight"] == 0:
            raise ConfigError(
                "objective.invariant_weight, objective.equivariant_weight: both 0 leaves nothing to learn"
            )
        self.invariant_weight, self.equivariant_weight = number["invariant_weight"], number["equivariant_weight"]
        self.temperature, self.probe_weight_decay = number["temperature"], number["probe_weight_decay"]
        try:
            self.views = ViewAugment.checked(
                number["crop_scale_min"], number["max_rotation"], number["jitter"], "objective"
            )
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def data(self, mixture: DomainMixture, image_size: int) -> DomainTensors:
        return DomainTensors(mixture, image_size)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """λ_inv · NT-Xent + λ_eq · AugSelf on two fresh views of the batch; the labels are not read.

        Both views go through the model in one forward, so BatchNorm normalises them with the same
        statistics (as SimCLR's implementation does). The stats add each objective's mean head weights
        (``gate/<objective>/<head>``), so a run shows how the heads split between the objectives.
        """
        images = batch["images"]
        (first, omega1), (second, omega2) = self.views(images), self.views(images)
        out = model(torch.cat([first, second]))
        inv1, inv2 = out.heads["invariant"].embedding.chunk(2)
        eq1, eq2 = out.heads["equivariant"].embedding.chunk(2)
        invariant = nt_xent(inv1, inv2, self.temperature)
        equivariant = transformation_regression(model.predict_transformation(eq1, eq2), omega2 - omega1)
        total = self.invariant_weight * invariant + self.equivariant_weight * equivariant
        stats = {"loss": total.item(), "invariant": invariant.item(), "equivariant": equivariant.item()}
        for task in TASKS:
            for j, weight in enumerate(out.heads[task].weights.detach().mean(dim=0).tolist()):
                stats[f"gate/{task}/{j}"] = weight
        return total, stats

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, data: DomainTensors, domains: Iterable[int], split: str, batch_size: int
    ) -> dict[int, dict[str, Any]]:
        """Domain id -> {probe_accuracy, cca, expert_load} on ``split``.

        The probe is fitted on the training split of *every* domain of the mixture (the same probe on
        every rank: the trunk and its BatchNorm statistics are synchronised before evaluation), then
        scored per domain. ``expert_load`` is each head's mean weight over both objectives (a row of
        the routing heatmap). Raises nothing beyond what the model raises.
        """
        was_training = model.training
        model.eval()
        mixture = data.mixture
        train = [self._embed(model, data.split(d, "train"), batch_size) for d in range(len(mixture.domains))]
        probe = LinearProbe.fit(
            torch.cat([t["features"] for t in train]),
            torch.cat([data.split(d, "train")["labels"] for d in range(len(mixture.domains))]),
            len(mixture.labels.names),
            weight_decay=self.probe_weight_decay,
        )
        results = {}
        for domain in domains:
            part = data.split(domain, split)
            embedded = self._embed(model, part, batch_size)
            results[domain] = {
                PROBE_ACCURACY: probe.accuracy(embedded["features"], part["labels"]),
                CCA: canonical_correlation(embedded["invariant"], embedded["equivariant"]).item(),
                "expert_load": embedded["weights"].mean(dim=0).tolist(),
            }
        model.train(was_training)
        return results

    def previews(self, model: nn.Module, data: DomainTensors, domains: Iterable[int], split: str) -> dict[int, Any]:
        """None: the probe's accuracy says what a preview would."""
        return {}

    @staticmethod
    def _embed(model: nn.Module, part: Mapping[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
        """Trunk features, both objectives' embeddings, and the heads' weights averaged over the objectives."""
        chunks: dict[str, list[torch.Tensor]] = {"features": [], "invariant": [], "equivariant": [], "weights": []}
        for start in range(0, len(part["labels"]), batch_size):
            out = model(part["images"][start : start + batch_size])
            chunks["features"].append(out.features)
            for task in TASKS:
                chunks[task].append(out.heads[task].embedding)
            chunks["weights"].append(sum(out.heads[task].weights for task in TASKS) / len(TASKS))
        return {key: torch.cat(values) for key, values in chunks.items()}


def _number(key: str, value: Any) -> float:
    """``value`` as a float; raises ConfigError naming ``objective.<key>`` for anything but a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"objective.{key}={value!r}: expected a number")
    return float(value)
