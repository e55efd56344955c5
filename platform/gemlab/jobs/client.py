"""The Ray Jobs SDK as gemlab uses it: the address, the runtime env, the entrypoint, waiting.

A job runs ``python -m gemlab.cli train|sweep <overrides>`` in a copy of the
repository that Ray unpacks on the cluster (``cluster/runtime_env.yaml``:
the repo minus .venv, data and runs; PYTHONPATH=platform so the shipped
gemlab is the one imported). Inside the job, ``ray.init()`` finds the
cluster through the RAY_ADDRESS that the job supervisor sets.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gemlab.engine.config import DEFAULT_CONFIG_DIR
from gemlab.errors import GemlabError

REPO_ROOT = DEFAULT_CONFIG_DIR.parent
DEFAULT_RUNTIME_ENV = REPO_ROOT / "cluster" / "runtime_env.yaml"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobsError(GemlabError, RuntimeError):
    """No address, an unreadable runtime env, an unreachable job server; the message says which."""


def job_address(address: str | None) -> str:
    """``--address``, else RAY_ADDRESS; the dashboard's http address (e.g. http://127.0.0.1:8265)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobsError("no cluster address: pass --address http://HOST:8265 or set RAY_ADDRESS")
    return address


def client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    resolved = job_address(address)
    try:
        return JobSubmissionClient(resolved)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise JobsError(f"cannot reach the Ray job server at {resolved}: {error}") from None


def load_runtime_env(path: str | Path = DEFAULT_RUNTIME_ENV) -> dict[str, Any]:
    """The runtime env file, its ``working_dir`` made absolute (relative to the repository root)."""
    path = Path(path)
    try:
        env = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise JobsError(f"runtime env {path}: {error}") from None
    if not isinstance(env, dict):
        raise JobsError(f"runtime env {path}: expected a mapping, got {type(env).__name__}")
    if "working_dir" in env and "://" not in str(env["working_dir"]):
        env["working_dir"] = str((REPO_ROOT / env["working_dir"]).resolve())
    return env


def entrypoint(command: str, overrides: Sequence[str]) -> str:
    """The job's shell command: gemlab from the shipped working dir, the overrides quoted."""
    return shlex.join(["python", "-m", "gemlab.cli", command, *overrides])


def follow_logs(jobs, job_id: str) -> None:
    """Print the job's logs as they come, until it ends."""

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())


def wait(jobs, job_id: str, poll_seconds: float = 1.0) -> str:
    """Block until the job reaches SUCCEEDED, FAILED or STOPPED; its status."""
    while True:
        status = str(jobs.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        time.sleep(poll_seconds)
