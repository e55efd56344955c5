"""Shared fixtures: generated digit domains (once per session) and one local Ray for the integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nine digit domains at 16 px, generated once (about 5 s)."""
    from gemlab.data.digits import generate_digits

    folder = tmp_path_factory.mktemp("digits") / "digits"
    generate_digits(folder, seed=0, image_size=16)
    return folder


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (4 logical CPUs, so 4-worker runs fit on a 2-core machine) shared by every Ray test."""
    os.environ.update(
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TRAIN_METRICS_ENABLED="0",
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1",
    )
    import ray

    ray.init(num_cpus=4, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
