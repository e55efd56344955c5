"""``gemlab submit``: run ``gemlab train`` or ``gemlab sweep`` on a Ray cluster as a job.

    gemlab submit --address http://127.0.0.1:8265 train experiment=quickstart trainer.use_gpu=true
    gemlab submit --follow sweep sweep=lambda_topk experiment=quickstart
    gemlab submit --no-wait train experiment=quickstart     # prints the job id and returns

The overrides are those of ``gemlab train`` / ``gemlab sweep``. By default the
command waits for the job, prints its final status (SUCCEEDED, FAILED or
STOPPED) and exits 1 unless it succeeded; a job that failed because the
cluster's python could not import a module gets one more line saying which.
The address comes from ``--address`` or RAY_ADDRESS; reach a remote dashboard
through a port-forward (cluster/README.md). A head started moments ago has no
job agent yet: the submission is retried for up to ``--agent-wait`` seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gemlab.jobs import AGENT_WAIT_SECONDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", choices=["train", "sweep"], help="what the job runs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for gemlab train / gemlab sweep")
    parser.add_argument("--address", default=None, help="the job server, e.g. http://127.0.0.1:8265 (or RAY_ADDRESS)")
    parser.add_argument("--runtime-env", type=Path, default=None, help="default: cluster/runtime_env.yaml")
    parser.add_argument("--job-id", default=None, help="a submission id (default: Ray's)")
    parser.add_argument("--follow", action="store_true", help="stream the job's logs while it runs")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    parser.add_argument(
        "--agent-wait", type=float, default=AGENT_WAIT_SECONDS, metavar="SECONDS",
        help=f"how long to wait for the job agent of a head that has just started (default {AGENT_WAIT_SECONDS:g})",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Submit the job, then wait for it unless --no-wait: 0 when it succeeded, 1 when not, 130 on Ctrl-C.

    Raises JobsError -- one line and exit 2 from gemlab's main -- for a bad
    runtime env, no or a malformed address, an unreachable job server or a
    refused submission.
    """
    from gemlab.jobs.client import DEFAULT_RUNTIME_ENV, client, entrypoint, job_server_errors, load_runtime_env, submit

    runtime_env = load_runtime_env(args.runtime_env or DEFAULT_RUNTIME_ENV)
    jobs = client(args.address)
    command = entrypoint(args.command, args.overrides)
    job_id = submit(jobs, command, runtime_env, args.job_id, agent_wait_seconds=args.agent_wait)
    print(f"submitted {job_id}", flush=True)
    if args.no_wait:
        return 0
    try:
        with job_server_errors():
            return _await(jobs, job_id, args)
    except KeyboardInterrupt:
        print(f"{args.prog}: stopped waiting; job {job_id} runs on (gemlab jobs stop {job_id})", file=sys.stderr)
        return 130


def _await(jobs, job_id: str, args: argparse.Namespace) -> int:
    """Follow or wait for the job, print its final status and, for a failure with a known cause, that cause."""
    from gemlab.jobs.client import explain_failure, follow_logs, wait

    if args.follow:
        follow_logs(jobs, job_id)
    status = wait(jobs, job_id)
    print(f"job {job_id}: {status}", flush=True)
    if status == "FAILED":
        explain_failure(jobs, job_id, args.prog)
    return 0 if status == "SUCCEEDED" else 1
