"""The run's data: the configured mixture, and its images decoded once into tensors.

Classification images in gemlab's experiments are small (digits are 28 px),
so each worker decodes the splits of *its* domains once -- about 10,000
images/s -- and then a batch is an index into a tensor. Decoding per step
would cost more than the training step itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from gemlab.data.collection import load_collection
from gemlab.data.dataset import load_sample
from gemlab.data.digits import generate_digits
from gemlab.data.fewshot import few_shot
from gemlab.data.mixture import DomainMixture
from gemlab.engine.config import ConfigError


def resolve(path: str | Path) -> Path:
    """An absolute path: Ray workers run in another working directory."""
    return Path(path).expanduser().resolve()


def collection_index(data_cfg: Mapping, seed: int, generate: bool) -> Path:
    """The ``gemlab-data.yaml`` of the configured source; digits are generated there first if ``generate``."""
    path = resolve(data_cfg["path"])
    index = path if path.suffix in (".yaml", ".yml") else path / "gemlab-data.yaml"
    if data_cfg["source"] == "digits" and not index.exists():
        if not generate:
            raise ConfigError(f"data.path={data_cfg['path']!r}: no digits at {path} (the driver generates them)")
        generate_digits(path, seed=seed, image_size=data_cfg["image_size"])
    if not index.is_file():
        raise ConfigError(f"data.path={data_cfg['path']!r}: no gemlab-data.yaml at {index}")
    return index


def build_mixture(data_cfg: Mapping, seed: int, generate: bool = False) -> DomainMixture:
    """The configured domains (in config order), with their few-shot views, weighted by ``data.alpha``."""
    mixture, _ = load_collection(collection_index(data_cfg, seed, generate))
    names = list(data_cfg["domains"] or mixture.names)
    unknown = [n for n in names if n not in mixture.names]
    if unknown:
        raise ConfigError(f"data.domains: unknown {unknown}; the source has {list(mixture.names)}")
    shots = dict(data_cfg["shots"] or {})
    stray = sorted(set(shots) - set(names))
    if stray:
        raise ConfigError(f"data.shots: {stray} are not among the run's domains {names}")
    domains = []
    for name in names:
        domain = mixture.domains[mixture.index(name)]
        domains.append(few_shot(domain, shots[name], seed) if name in shots else domain)
    return DomainMixture(domains, alpha=data_cfg["alpha"])


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


def _number(domain: str, metadata: Mapping, column: str) -> float:
    try:
        return float(metadata[column])
    except (TypeError, ValueError):
        raise ConfigError(f"domain {domain!r}: metadata {column}={metadata[column]!r} is not a number") from None
