"""Shared fixtures: generated digit and detection domains (once per session), one local Ray for the
integration tests, and an S3 endpoint on the loopback interface for object-store storage."""

from __future__ import annotations

import logging
import os
import re
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
def synth_uodb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synth-uodb at 64 px and a tenth of its size (2 to 80 training images per domain), generated once (~1 s)."""
    from gemlab.data.synth.uodb import generate_synth_uodb

    folder = tmp_path_factory.mktemp("synth-uodb") / "synth-uodb"
    generate_synth_uodb(folder, seed=0, image_size=64, scale=0.1, workers=1)
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


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3 endpoint on 127.0.0.1 (moto's server): object-store storage is tested over the real S3 protocol."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_uri(s3_endpoint, request) -> str:
    """A storage URI of its own per test, credentials and endpoint in the URI so Ray's workers can open it too."""
    prefix = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:60]
    options = f"endpoint_override={s3_endpoint}&scheme=http&region=us-east-1&allow_bucket_creation=true"
    return f"s3://test:test@gemlab/{prefix}?{options}"
