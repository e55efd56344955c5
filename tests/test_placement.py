"""Experts onto workers: identity, load-balanced packing, replica groups."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemlab.plan.errors import PlanInputError
from gemlab.plan.placement import Placement, place_experts


def test_identity_when_experts_equal_workers():
    placement = place_experts([5.0, 1.0, 3.0], 3)
    assert placement.expert_workers == ((0,), (1,), (2,))
    assert placement.worker_experts == ((0,), (1,), (2,))


def test_more_experts_than_workers_is_balanced_longest_first():
    # LPT by hand: 5 -> r0, 4 -> r1, 3 -> r1 (4 < 5), 3 -> r0 (5 < 7), 3 -> r1 (7 < 8)
    placement = place_experts([5, 4, 3, 3, 3], 2)
    assert placement.worker_experts == ((0, 3), (1, 2, 4))
    assert [placement.worker_load(r) for r in range(2)] == [8.0, 10.0]


def test_zero_loads_still_give_every_worker_an_expert():
    placement = place_experts([0, 0, 0, 0, 0], 3)
    assert all(len(owned) >= 1 for owned in placement.worker_experts)


def test_eight_experts_on_thirty_two_workers():
    loads = [8, 4, 4, 2, 2, 1, 1, 1]
    placement = place_experts(loads, 32)
    sizes = [len(g) for g in placement.expert_workers]
    assert sum(sizes) == 32 and min(sizes) >= 1
    assert sizes[0] >= sizes[1] >= sizes[3] >= sizes[5]
    flat = [rank for group in placement.expert_workers for rank in group]
    assert flat == list(range(32))  # contiguous blocks in expert order


@settings(max_examples=60, deadline=None)
@given(
    loads=st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=12),
    workers=st.integers(min_value=1, max_value=40),
)
def test_placement_is_consistent_and_deterministic(loads, workers):
    placement = place_experts(loads, workers)
    assert len(placement.expert_workers) == len(loads)
    assert all(len(group) >= 1 for group in placement.expert_workers)
    if len(loads) >= workers:
        assert all(len(owned) >= 1 for owned in placement.worker_experts)
        assert sorted(j for owned in placement.worker_experts for j in owned) == list(range(len(loads)))
    for rank, owned in enumerate(placement.worker_experts):
        for expert in owned:
            assert rank in placement.expert_workers[expert]
    assert place_experts(loads, workers) == placement
    assert Placement.from_dict(placement.to_dict()) == placement


def test_lpt_is_within_its_guarantee_of_the_best_balance():
    rng = np.random.default_rng(0)
    for _ in range(20):
        loads = rng.lognormal(0, 1, 17)
        placement = place_experts(loads, 4)
        worst = max(placement.worker_load(r) for r in range(4))
        lower_bound = max(loads.sum() / 4, loads.max())
        assert worst <= (4 / 3) * lower_bound + 1e-9  # Graham's bound for LPT


@pytest.mark.parametrize(
    ("loads", "workers", "message"),
    [
        ([1, 2], 0, "num_workers must be an integer >= 1, got 0"),
        ([], 2, "non-empty"),
        ([1, -2], 2, "expert 1 has load -2.0"),
        ([1, float("nan")], 2, "expert 1 has load nan"),
        ([[1, 2]], 2, "shape (1, 2)"),
    ],
)
def test_bad_input(loads, workers, message):
    with pytest.raises(PlanInputError) as error:
        place_experts(loads, workers)
    assert message in str(error.value)
