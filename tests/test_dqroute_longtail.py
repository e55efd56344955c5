"""The long-tailed view of a classification mixture (``data.long_tail``), and DQRoute's class groups on it."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from gemlab.data.domain import Domain
from gemlab.data.errors import DataError
from gemlab.data.longtail import long_tail_counts, long_tailed
from gemlab.data.records import Category, Sample
from gemlab.engine.config import ConfigError, compose_config
from gemlab.engine.data import build_mixture
from gemlab.engine.model import class_counts
from gemlab.moe.routers.confidence import class_groups


def _domain(per_class: list[int], task: str = "classification") -> Domain:
    categories = tuple(Category(c, f"c{c}") for c in range(len(per_class)))
    train = []
    for c, count in enumerate(per_class):
        for i in range(count):
            if task == "classification":
                train.append(Sample(Path(f"/x/{c}_{i}.png"), 8, 8, label=c))
            else:
                train.append(Sample(Path(f"/x/{c}_{i}.png"), 8, 8, boxes=((0, 0, 2, 2),), category_ids=(c,)))
    val = (Sample(Path("/x/val.png"), 8, 8, label=0),) if task == "classification" else ()
    return Domain("toy", task, categories, {"train": tuple(train), "val": val})


@pytest.mark.parametrize(("n_max", "classes", "rho"), [(100, 10, 100.0), (50, 4, 10.0), (7, 1, 5.0), (30, 5, 1.0)])
def test_counts_follow_the_exponential_profile(n_max, classes, rho):
    expected = [
        max(1, math.floor(n_max * rho ** (-c / (classes - 1)))) if classes > 1 else n_max for c in range(classes)
    ]
    assert long_tail_counts(n_max, classes, rho) == expected
    assert long_tail_counts(n_max, classes, rho)[0] == n_max


def test_the_view_cuts_each_class_of_the_training_split_only_and_is_seeded():
    domain = _domain([40, 45, 50, 60])
    view = long_tailed(domain, rho=10.0, seed=3)
    kept = Counter(sample.label for sample in view.split("train"))
    assert [kept[c] for c in range(4)] == long_tail_counts(40, 4, 10.0) == [40, 18, 8, 4]
    assert view.split("val") == domain.split("val") and view.name == domain.name
    again, other = long_tailed(domain, 10.0, seed=3), long_tailed(domain, 10.0, seed=4)
    assert again.split("train") == view.split("train") and other.split("train") != view.split("train")


def test_the_view_refuses_what_it_cannot_cut():
    with pytest.raises(DataError, match="rho must be a number >= 1"):
        long_tailed(_domain([5, 5]), rho=0.5, seed=0)
    with pytest.raises(DataError, match="profile"):
        long_tailed(_domain([5, 5]), rho=2.0, seed=0, profile="linear")
    with pytest.raises(DataError, match="not a classification domain"):
        long_tailed(_domain([5, 5], task="detection"), rho=2.0, seed=0)
    with pytest.raises(DataError, match=r"no train images of \['c1'\]"):
        long_tailed(_domain([5, 0]), rho=2.0, seed=0)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("{rho:0.5}", "data.long_tail.rho=0.5"),
        ("{rho:many}", "data.long_tail.rho='many'"),
        ("{rho:10,profile:linear}", "data.long_tail.profile='linear'"),
        ("{rho:10,ratio:3}", "data.long_tail.ratio"),
        ("100", "data.long_tail=100"),
    ],
)
def test_bad_long_tail_values_are_config_errors_naming_the_key(value, key):
    with pytest.raises(ConfigError) as error:
        compose_config([f"data.long_tail={value}"])
    assert key in str(error.value)


def test_on_the_digits_only_the_long_tailed_view_gives_every_expert_classes(digits_dir):
    domains = "data.domains=[rot0,rot15,rot30]"
    balanced = build_mixture(compose_config([f"data.path={digits_dir}", domains]).data, 0)
    counts = class_counts(balanced)
    assert [len(g) for g in class_groups(counts, 100, 20)] == [10, 0, 0]  # today's digits: one expert
    cfg = compose_config([f"data.path={digits_dir}", domains, "data.long_tail={rho:100,profile:exponential}"])
    mixture = build_mixture(cfg.data, 0)
    counts = class_counts(mixture)
    assert counts == sorted(counts, reverse=True) and counts[0] / counts[-1] >= 50
    assert all(len(group) > 0 for group in class_groups(counts, 100, 20))  # general, medium and tail experts
    for before, after in zip(balanced.domains, mixture.domains, strict=True):  # evaluation splits untouched
        assert after.split("val") == before.split("val") and after.split("calib") == before.split("calib")
