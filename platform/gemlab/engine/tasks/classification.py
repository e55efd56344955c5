"""Classification: images decoded once into tensors, cross-entropy (or the router's loss), accuracy.

Classification images in gemlab's experiments are small (digits are 28 px),
so each worker decodes the splits of *its* domains once -- about 10,000
images/s -- and then a batch is an index into a tensor. Decoding per step
would cost more than the training step itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from gemlab.data.dataset import load_sample
from gemlab.data.mixture import DomainMixture
from gemlab.engine.config import ConfigError
from gemlab.engine.model import class_counts
from gemlab.engine.tasks import expert_share, load_shares
from gemlab.evaluation import AccuracyEvaluator


class DomainTensors:
    """Decoded (domain, split) image tensors in [-0.5, 0.5], labels in the mixture's global label space.

    Numeric metadata columns (for metadata routers) come along as a float tensor per split.
    """

    def __init__(self, mixture: DomainMixture, image_size: int) -> None:
        self.mixture, self.image_size = mixture, image_size
        self._cache: dict[tuple[int, str], dict[str, torch.Tensor]] = {}

    def split(self, domain_id: int, split: str) -> dict[str, torch.Tensor]:
        """``images`` (N, 3, S, S), ``labels`` (N,) and, with metadata columns, ``metadata`` (N, M)."""
        key = (domain_id, split)
        if key not in self._cache:
            domain = self.mixture.domains[domain_id]
            to_global = self.mixture.labels.local_to_global[domain_id]
            images, labels, metadata = [], [], []
            for sample in domain.split(split):
                image, target = load_sample(domain, sample)
                images.append(TF.resize(image, [self.image_size, self.image_size], antialias=True))
                labels.append(to_global[target["label"]])
                metadata.append([_number(domain.name, sample.metadata, c) for c in domain.metadata_columns])
            tensors = {"images": torch.stack(images).float().div_(255).sub_(0.5), "labels": torch.tensor(labels)}
            if domain.metadata_columns:
                tensors["metadata"] = torch.tensor(metadata, dtype=torch.float32)
            self._cache[key] = tensors
        return self._cache[key]

    def batch(self, pairs: Sequence[tuple[int, int]], split: str = "train") -> dict[str, torch.Tensor]:
        """The batch of ``(domain id, index)`` pairs, as the mixture sampler draws them."""
        rows = [{name: t[index] for name, t in self.split(d, split).items()} for d, index in pairs]
        batch = {name: torch.stack([row[name] for row in rows]) for name in ("images", "labels")}
        if all("metadata" in row for row in rows):
            batch["metadata"] = torch.stack([row["metadata"] for row in rows])
        batch["domain"] = torch.tensor([d for d, _ in pairs])
        return batch

    def calibration(self, domain: int, split: str, count: int, seed: int) -> tuple[torch.Tensor, list[list[int]]]:
        part = self.split(domain, split)
        take = torch.as_tensor(np.random.default_rng([seed, domain]).permutation(len(part["labels"]))[:count])
        return part["images"][take], [[int(label)] for label in part["labels"][take]]


def model_inputs(batch: Mapping[str, torch.Tensor], with_labels: bool) -> dict[str, torch.Tensor | None]:
    """The side information a router may use: domain always, labels only in training, metadata if present."""
    return {
        "domain": batch["domain"],
        "labels": batch["labels"] if with_labels else None,
        "metadata": batch.get("metadata"),
    }


class ClassificationTask:
    """Images -> one label; the model's ``criterion`` is cross-entropy or the router's own loss."""

    name, metric = "classification", "accuracy"

    def data(self, mixture: DomainMixture, image_size: int) -> DomainTensors:
        return DomainTensors(mixture, image_size)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """criterion + the routers' auxiliary losses + λ · the model's feature alignment, if it has one.

        The alignment (``invariance.*``; :mod:`gemlab.engine.invariance`) is Deep CORAL's Eq. 1 averaged
        over the batch's aligned domain pairs, on the pooled features the head reads; ``invariance``
        in the stats is that mean before λ.
        """
        out = model(batch["images"], **model_inputs(batch, with_labels=True))
        task = model.criterion(out.logits, batch["labels"])
        stats = {"loss": task.item(), **{f"aux/{k}": v.item() for k, v in out.aux_losses.items()}}
        total = task + out.aux_loss
        alignment = getattr(model, "alignment", None)  # only classifiers built with invariance.mode != none
        if alignment is not None:
            penalty = alignment(out.features, batch["domain"])
            stats["invariance"] = penalty.item()
            total = total + alignment.weight * penalty
        return total, stats

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, data: DomainTensors, domains: Iterable[int], split: str, batch_size: int
    ) -> dict[int, dict[str, Any]]:
        """Domain id -> {accuracy, loss, macro_f1, many/medium/few_shot_accuracy, expert_load} on ``split``.

        The shot groups are by the mixture's training images per class (the whole mixture's, so a class
        is in one group in every domain).
        """
        was_training = model.training
        model.eval()
        results = {}
        evaluator = AccuracyEvaluator(class_counts(data.mixture))
        for domain in domains:
            part = data.split(domain, split)
            evaluator.reset()
            load = None
            for start in range(0, len(part["labels"]), batch_size):
                batch = {k: v[start : start + batch_size] for k, v in part.items()}
                batch["domain"] = torch.full((len(batch["labels"]),), domain)
                out = model(batch["images"], **model_inputs(batch, with_labels=False))
                evaluator.process(batch["labels"], out.logits)
                counts = expert_share(out.routings)
                load = counts if load is None else load + counts
            results[domain] = {**evaluator.evaluate(), "expert_load": load_shares(load)}
        model.train(was_training)
        return results

    def previews(self, model: nn.Module, data: DomainTensors, domains: Iterable[int], split: str) -> dict[int, Any]:
        """None: a label is in the per-domain accuracy already."""
        return {}


CLASSIFICATION = ClassificationTask()


def _number(domain: str, metadata: Mapping, column: str) -> float:
    try:
        return float(metadata[column])
    except (TypeError, ValueError):
        raise ConfigError(f"domain {domain!r}: metadata {column}={metadata[column]!r} is not a number") from None
