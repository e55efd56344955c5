"""The run's data: the configured mixture of domains, generated first when its source is generated.

How images become batches is the task's business (:mod:`gemlab.engine.tasks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gemlab.data.collection import load_collection
from gemlab.data.digits import generate_digits
from gemlab.data.domain import Domain
from gemlab.data.errors import DataError
from gemlab.data.fewshot import few_shot
from gemlab.data.longtail import long_tailed
from gemlab.data.mixture import DomainMixture
from gemlab.data.synth.uodb import generate_synth_uodb
from gemlab.engine.config import ConfigError


def resolve(path: str | Path) -> Path:
    """An absolute path: Ray workers run in another working directory."""
    return Path(path).expanduser().resolve()


def collection_index(data_cfg: Mapping, seed: int, generate: bool) -> Path:
    """The ``gemlab-data.yaml`` of the configured source; a generated source is generated there first if ``generate``.

    Generated sources are drawn from ``seed`` at ``data.image_size``: ``digits`` (classification) and
    ``synth_uodb`` (detection, nine domains; :mod:`gemlab.data.synth.uodb`).
    """
    path = resolve(data_cfg["path"])
    index = path if path.suffix in (".yaml", ".yml") else path / "gemlab-data.yaml"
    generator = _GENERATORS.get(data_cfg["source"])
    if generator is not None and not index.exists():
        if not generate:
            raise ConfigError(
                f"data.path={data_cfg['path']!r}: no {data_cfg['source']} data at {path} (the driver generates them)"
            )
        generator(path, seed=seed, image_size=data_cfg["image_size"])
    if not index.is_file():
        raise ConfigError(f"data.path={data_cfg['path']!r}: no gemlab-data.yaml at {index}")
    return index


_GENERATORS = {"digits": generate_digits, "synth_uodb": generate_synth_uodb}


def _long_tail_view(domain: Domain, long_tail: Mapping | None, seed: int) -> Domain:
    """``domain`` with ``data.long_tail`` applied to its training split (None: unchanged).

    Raises ConfigError naming ``data.long_tail`` for a domain the view cannot cut (detection, a class without images).
    """
    if long_tail is None:
        return domain
    try:
        return long_tailed(domain, long_tail["rho"], seed, long_tail.get("profile", "exponential"))
    except DataError as error:
        raise ConfigError(f"data.long_tail: {error}") from None


def replay_of(adapt_cfg: Mapping) -> tuple[list[str], float] | None:
    """``(adapt.add, adapt.replay)`` when a run continues a trained one with a replay fraction, else None."""
    if adapt_cfg["parent"] is None or adapt_cfg["replay"] is None:
        return None
    return list(adapt_cfg["add"]), float(adapt_cfg["replay"])


def build_mixture(
    data_cfg: Mapping, seed: int, generate: bool = False, replay: tuple[list[str], float] | None = None
) -> DomainMixture:
    """The configured domains (in config order), with their few-shot and long-tailed views, weighted by ``data.alpha``.

    ``data.holdout`` (a domain name, or null) stays in the mixture for evaluation but gets sampling
    weight 0 (leave-one-domain-out). ``replay`` (:func:`replay_of`) reweights added and earlier domains
    as :class:`DomainMixture` says. Raises ConfigError naming the key for an unknown domain or
    held-out name, or a held-out domain that is the only one.
    """
    mixture, _ = load_collection(collection_index(data_cfg, seed, generate))
    names = list(data_cfg["domains"] or mixture.names)
    unknown = [n for n in names if n not in mixture.names]
    if unknown:
        raise ConfigError(f"data.domains: unknown {unknown}; the source has {list(mixture.names)}")
    shots = dict(data_cfg["shots"] or {})
    stray = sorted(set(shots) - set(names))
    if stray:
        raise ConfigError(f"data.shots: {stray} are not among the run's domains {names}")
    heldout = data_cfg.get("holdout")
    if heldout is not None and heldout not in names:
        raise ConfigError(f"data.holdout={heldout!r}: not among the run's domains {names}")
    if heldout is not None and len(names) < 2:
        raise ConfigError(f"data.holdout={heldout!r}: the run's only domain; nothing would be left to train on")
    domains = []
    for name in names:
        domain = mixture.domains[mixture.index(name)]
        domain = few_shot(domain, shots[name], seed) if name in shots else domain
        domains.append(_long_tail_view(domain, data_cfg.get("long_tail"), seed))
    if replay is not None:  # the added domains by the names their views give them (noise-10shot)
        unknown = [name for name in replay[0] if name not in names]
        if unknown:
            raise ConfigError(f"adapt.add: {unknown} are not among the run's domains {names}")
        replay = ([domains[names.index(name)].name for name in replay[0]], replay[1])
    return DomainMixture(domains, alpha=data_cfg["alpha"], heldout=() if heldout is None else (heldout,), replay=replay)
