"""The Ray Jobs SDK as gemlab uses it: the address, the runtime env, the entrypoint, submitting, waiting.

A job runs ``python -m gemlab.cli train|sweep <overrides>`` in a copy of the
repository that Ray unpacks on the cluster (``cluster/runtime_env.yaml``:
the repo minus .venv, data and runs; PYTHONPATH=platform so the shipped
gemlab is the one imported). Inside the job, ``ray.init()`` finds the
cluster through the RAY_ADDRESS that the job supervisor sets.

Whatever the SDK raises -- nothing at the address, a request the job server
refuses, an unknown job id -- becomes one :class:`JobsError` line. Every text
gemlab prints that came from a job (entrypoints, logs, status messages) goes
through :func:`gemlab.storage.masked` first: a storage URI may carry
``KEY:SECRET@`` credentials, and they must not reach a terminal.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gemlab.errors import GemlabError, user_message
from gemlab.handwritten import read_yaml_mapping
from gemlab.jobs import AGENT_WAIT_SECONDS
from gemlab.repository import REPO_ROOT
from gemlab.storage import masked

DEFAULT_RUNTIME_ENV = REPO_ROOT / "cluster" / "runtime_env.yaml"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_NO_AGENT = "No available agent to submit job"  # the job server's answer until the head's agent has registered
_HTTP_ADDRESS = re.compile(r"https?://[^/\s?#]+(/\S*)?")
_REFUSED = re.compile(r"Request failed with status code (\d+): (.*)", re.DOTALL)
_MISSING_MODULE = re.compile(r"No module named '([^']+)'")


class JobsError(GemlabError, RuntimeError):
    """No address, an unreadable runtime env, an unreachable or refusing job server; the message says which."""


def job_address(address: str | None) -> str:
    """``--address``, else RAY_ADDRESS: the dashboard's http(s) address (e.g. http://127.0.0.1:8265).

    Raises JobsError when there is none or it is not an http(s) URL: Ray would
    take ``host:port`` for a GCS address and ``ray://`` for a Ray Client one,
    and wait 30 s or more before failing.
    """
    given, source = (address, "--address") if address else (os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS")
    if not given:
        raise JobsError("no cluster address: pass --address http://HOST:8265 or set RAY_ADDRESS")
    if not _HTTP_ADDRESS.fullmatch(given):
        raise JobsError(f"{source} {masked(given)!r} is not the job server's http address, e.g. http://127.0.0.1:8265")
    return given


def client(address: str | None) -> Any:
    """A ``JobSubmissionClient`` of the job server; raises JobsError naming the address when it does not answer."""
    from ray.job_submission import JobSubmissionClient

    resolved = job_address(address)
    try:
        return JobSubmissionClient(resolved)
    except ConnectionError:
        raise JobsError(
            f"cannot reach the Ray job server at {masked(resolved)}: no answer "
            "(is the head running and its dashboard port forwarded? see cluster/README.md)"
        ) from None
    except _sdk_failures() as error:
        raise JobsError(f"{masked(resolved)}: {sdk_message(error)}") from None


def _sdk_failures() -> tuple[type[BaseException], ...]:
    """What the Jobs SDK raises for a lost connection, a refused request or an unknown job."""
    import aiohttp
    from ray.exceptions import RayError

    return (OSError, RuntimeError, ValueError, RayError, aiohttp.ClientError)


def sdk_message(error: BaseException) -> str:
    """One line for a failure the Jobs SDK raised, credentials masked; raises nothing.

    For a refused request: the HTTP status and the job server's own words, the
    last line of any traceback it sent back. Otherwise the error's first line.
    """
    text = masked(str(error)).strip()
    refused = _REFUSED.fullmatch(text)
    if refused:
        status, answer = refused.groups()
        worded = [line for line in _lines(answer) if line.strip(".")]  # the SDK appends a "." line per hop
        return f"the job server answered {status}: {(worded or ['?'])[-1].rstrip('.')}"
    return _lines(text)[0] if text else type(error).__name__


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()] or [text.strip()]


@contextmanager
def job_server_errors() -> Iterator[None]:
    """Inside the block, whatever the Jobs SDK raises is re-raised as one JobsError line (see :func:`sdk_message`)."""
    try:
        yield
    except JobsError:
        raise
    except _sdk_failures() as error:
        raise JobsError(sdk_message(error)) from None


def load_runtime_env(path: str | Path = DEFAULT_RUNTIME_ENV) -> dict[str, Any]:
    """The runtime env file, its ``working_dir`` made absolute (relative to the repository root).

    Checked here as Ray would check it on submission, so a bad file is named
    before any cluster is contacted. Raises JobsError naming the file when it
    cannot be read, is not a YAML mapping, has a key Ray does not know (a typo
    would be ignored) or a value Ray refuses.
    """
    path = Path(path)
    env = _read_mapping(path)
    if "working_dir" in env and "://" not in str(env["working_dir"]):
        env["working_dir"] = str((REPO_ROOT / str(env["working_dir"])).resolve())
    _check_as_ray_does(path, env)
    return env


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        return read_yaml_mapping(path, JobsError)
    except JobsError as error:
        raise JobsError(f"runtime env {error}") from None
    except OSError as error:
        raise JobsError(f"runtime env {user_message(error)}") from None


def _check_as_ray_does(path: Path, env: dict[str, Any]) -> None:
    from ray.runtime_env import RuntimeEnv

    unknown = sorted(str(key) for key in set(env) - RuntimeEnv.known_fields)
    if unknown:
        raise JobsError(f"runtime env {path}: {', '.join(unknown)}: not a runtime env key Ray knows")
    try:
        RuntimeEnv(**env)
    except (TypeError, ValueError) as error:
        raise JobsError(f"runtime env {path}: {_lines(str(error))[0]}") from None


def entrypoint(command: str, overrides: Sequence[str]) -> str:
    """The job's shell command: gemlab from the shipped working dir, the overrides quoted; raises nothing."""
    return shlex.join(["python", "-m", "gemlab.cli", command, *overrides])


def submit(
    jobs: Any,
    command: str,
    runtime_env: dict[str, Any],
    submission_id: str | None = None,
    agent_wait_seconds: float = AGENT_WAIT_SECONDS,
    poll_seconds: float = 1.0,
) -> str:
    """Submit ``command``; its submission id.

    Right after ``ray start --head`` the job server answers "No available
    agent to submit job" for several seconds, until the head's dashboard agent
    registers: that answer is retried every ``poll_seconds`` for about
    ``agent_wait_seconds``, with one line on stderr saying so. Raises
    JobsError when the agent has not come by then, or when the job server
    refuses the job (a submission id already used, a runtime env it rejects).
    """
    deadline = time.monotonic() + agent_wait_seconds
    said_waiting = False
    while (job_id := _submit_unless_no_agent(jobs, command, runtime_env, submission_id)) is None:
        if time.monotonic() >= deadline:
            raise JobsError(
                f"the head's job agent did not answer within {agent_wait_seconds:g} s "
                "(is the head still starting? --agent-wait SECONDS waits longer)"
            )
        if not said_waiting:
            print(f"waiting up to {agent_wait_seconds:g} s for the head's job agent", file=sys.stderr, flush=True)
            said_waiting = True
        time.sleep(poll_seconds)
    return job_id


def _submit_unless_no_agent(
    jobs: Any, command: str, runtime_env: dict[str, Any], submission_id: str | None
) -> str | None:
    try:
        with job_server_errors():
            return jobs.submit_job(entrypoint=command, runtime_env=runtime_env, submission_id=submission_id)
    except JobsError as error:
        if _NO_AGENT in str(error):
            return None
        raise


def job_lines(jobs: Any) -> list[str]:
    """One line per job of the cluster, oldest first: id, status, entrypoint (credentials masked).

    Raises what the SDK raises for an unreachable server (see :func:`job_server_errors`).
    """
    listed = sorted(jobs.list_jobs(), key=lambda job: job.start_time or 0)
    return [f"{job.submission_id or job.job_id}  {job.status.value:<9}  {masked(job.entrypoint)}" for job in listed]


def job_logs(jobs: Any, job_id: str) -> str:
    """The job's logs so far, credentials masked; raises what the SDK raises, e.g. for an unknown job."""
    return masked(jobs.get_job_logs(job_id))


def follow_logs(jobs: Any, job_id: str) -> None:
    """Print the job's logs as they come, credentials masked, until it ends; raises what the SDK raises."""

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            print(masked(lines), end="", flush=True)

    asyncio.run(tail())


def wait(jobs: Any, job_id: str, poll_seconds: float = 1.0) -> str:
    """Block until the job reaches SUCCEEDED, FAILED or STOPPED; its status. Raises what the SDK raises."""
    while True:
        status = str(jobs.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        time.sleep(poll_seconds)


def failure_hint(job_id: str, message: str) -> str | None:
    """One line naming the module that a FAILED job's python could not import, and where to read on; else None.

    ``message`` is the job's status message, which ends with the last lines
    of its logs, so the ``ModuleNotFoundError`` that ended the driver is
    there; the last module it names is the one. Raises nothing.
    """
    named = _MISSING_MODULE.findall(message)
    if not named:
        return None
    module = named[-1]
    if module.partition(".")[0] == "gemlab":
        return (
            f"job {job_id}: the cluster's python cannot import {module}: ship the repository with the runtime env "
            "(its PYTHONPATH=platform) or install gemlab in the nodes' image (cluster/README.md)"
        )
    return (
        f"job {job_id}: the cluster's python has no module {module!r}, which gemlab needs: use an image with "
        "gemlab's dependencies or list them under pip: in the runtime env (cluster/README.md)"
    )


def explain_failure(jobs: Any, job_id: str, prog: str) -> None:
    """Print :func:`failure_hint`'s line for the job on stderr, after ``prog:``, when there is one.

    Raises what the SDK raises (see :func:`job_server_errors`).
    """
    hint = failure_hint(job_id, jobs.get_job_info(job_id).message or "")
    if hint:
        print(f"{prog}: {hint}", file=sys.stderr)
