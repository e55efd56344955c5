"""Domain, DomainMixture and the sampler: validation, weights, label union, reproducible streams."""

from pathlib import Path

import numpy as np
import pytest

from gemlab.data.domain import Domain
from gemlab.data.errors import DataError
from gemlab.data.mixture import DomainMixture
from gemlab.data.records import Category, Sample
from gemlab.data.sampler import MixtureSampler


def _domain(name, size, categories=("car", "person"), task="detection", **kwargs):
    cats = tuple(Category(i + 1, c) for i, c in enumerate(categories))
    samples = tuple(
        Sample(Path(f"/{name}/{i}.png"), 32, 32, i + 1, ((1.0, 1.0, 4.0, 4.0),), (cats[i % len(cats)].id,))
        for i in range(size)
    )
    return Domain(name, task, cats, {"train": samples, "val": samples[:2]}, **kwargs)


def test_weights_follow_size_power_alpha():
    domains = [_domain("a", 100), _domain("b", 25), _domain("c", 4)]
    sizes = np.array([100, 25, 4], dtype=float)
    for alpha in (0.0, 0.5, 1.0):
        expected = sizes**alpha / (sizes**alpha).sum()
        np.testing.assert_allclose(DomainMixture(domains, alpha).weights, expected)
    np.testing.assert_allclose(DomainMixture(domains, 0.0).weights, [1 / 3] * 3)


def test_label_space_is_union_by_name_with_per_domain_mapping():
    mixture = DomainMixture([_domain("a", 3, ("car", "person")), _domain("b", 3, ("sign", "car"))])
    assert mixture.labels.names == ("car", "person", "sign")
    assert mixture.labels.local_to_global == ({1: 0, 2: 1}, {1: 2, 2: 0})
    assert mixture.labels.owners(0) == (0, 1) and mixture.labels.owners(2) == (1,)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Domain("", "detection", (), {"train": ()}), "non-empty"),
        (lambda: Domain("x", "segmentation", (), {"train": ()}), "task must be one of"),
        (
            lambda: Domain("x", "detection", (Category(1, "a"), Category(1, "b")), {"train": ()}),
            "duplicate category id",
        ),
        (
            lambda: Domain("x", "detection", (Category(1, "a"), Category(2, "a")), {"train": ()}),
            "duplicate category name",
        ),
        (lambda: Domain("empty", "detection", (Category(1, "a"),), {"train": ()}), "'empty': the train split is empty"),
        (lambda: Domain("x", "detection", (Category(1, "a"),), {"tests": ()}), "unknown split"),
        (
            lambda: Domain(
                "x",
                "detection",
                (Category(1, "a"),),
                {"train": (Sample(Path("/i.png"), 8, 8, 1, ((0, 0, 1, 1),), (7,)),)},
            ),
            "/i.png uses unknown category id(s) [7]",
        ),
        (lambda: _domain("geo", 2, metadata_columns=("lat",)), "lacks metadata ['lat']"),
        (lambda: DomainMixture([_domain("a", 2), _domain("a", 3)]), "duplicate domain name(s) ['a']"),
        (lambda: DomainMixture([]), "no domains"),
        (lambda: DomainMixture([_domain("a", 2)], alpha=-1), "alpha"),
    ],
)
def test_bad_domains_are_rejected_with_a_clear_message(build, message):
    with pytest.raises(DataError, match=None) as error:
        build()
    assert message in str(error.value)


def test_sampler_frequencies_match_mixture_weights():
    mixture = DomainMixture([_domain("a", 400), _domain("b", 100), _domain("c", 20)], alpha=0.5)
    sampler = MixtureSampler(mixture, batch_size=256, seed=3)
    draws = np.array([d for step in range(80) for d, _ in sampler.batch(step)])
    counts = np.bincount(draws, minlength=3)
    expected = mixture.weights * len(draws)
    # Binomial standard deviation per domain; 5 sigma keeps the test honest and stable.
    sigma = np.sqrt(len(draws) * mixture.weights * (1 - mixture.weights))
    assert np.all(np.abs(counts - expected) < 5 * sigma)


def test_sampler_indices_stay_inside_each_domain():
    mixture = DomainMixture([_domain("a", 7), _domain("b", 3)])
    sampler = MixtureSampler(mixture, batch_size=64, seed=0)
    for step in range(20):
        for d, i in sampler.batch(step):
            assert 0 <= i < mixture.domains[d].size


def test_worker_subset_never_yields_other_domains_and_keeps_relative_weights():
    mixture = DomainMixture([_domain("a", 300), _domain("b", 100), _domain("c", 50), _domain("d", 50)])
    sampler = MixtureSampler(mixture, batch_size=200, seed=1, rank=1, domain_ids=[1, 3])
    draws = [d for step in range(50) for d, _ in sampler.batch(step)]
    assert set(draws) <= {1, 3}
    share = draws.count(1) / len(draws)
    assert abs(share - 100 / 150) < 0.05


def test_same_seed_rank_step_gives_same_batch_regardless_of_history():
    mixture = DomainMixture([_domain("a", 50), _domain("b", 30)])
    first = MixtureSampler(mixture, batch_size=16, seed=7, rank=2)
    stream = [first.batch(s) for s in range(10)]
    restored = MixtureSampler(mixture, batch_size=16, seed=7, rank=2)
    resumed = restored.batches(start_step=6)
    assert [next(resumed) for _ in range(4)] == stream[6:10]
    other_rank = MixtureSampler(mixture, batch_size=16, seed=7, rank=3)
    assert other_rank.batch(6) != stream[6]


def test_sampler_rejects_bad_arguments():
    mixture = DomainMixture([_domain("a", 5)])
    with pytest.raises(DataError, match="batch_size"):
        MixtureSampler(mixture, batch_size=0, seed=0)
    with pytest.raises(DataError, match="domain ids"):
        MixtureSampler(mixture, batch_size=2, seed=0, domain_ids=[3])
    with pytest.raises(DataError, match="has no 'calib' split"):
        MixtureSampler(mixture, batch_size=2, seed=0, split="calib")
