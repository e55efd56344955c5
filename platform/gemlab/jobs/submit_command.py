"""``gemlab submit``: run ``gemlab train`` or ``gemlab sweep`` on a Ray cluster as a job.

    gemlab submit --address http://127.0.0.1:8265 train experiment=quickstart trainer.use_gpu=true
    gemlab submit --follow sweep sweep=lambda_topk experiment=quickstart
    gemlab submit --no-wait train experiment=quickstart     # prints the job id and returns

The overrides are those of ``gemlab train`` / ``gemlab sweep``. By default the
command waits for the job, prints its final status (SUCCEEDED, FAILED or
STOPPED) and exits non-zero unless it succeeded. The address comes from
``--address`` or RAY_ADDRESS; reach a remote dashboard through a port-forward
(cluster/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", choices=["train", "sweep"], help="what the job runs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for gemlab train / gemlab sweep")
    parser.add_argument("--address", default=None, help="the job server, e.g. http://127.0.0.1:8265 (or RAY_ADDRESS)")
    parser.add_argument("--runtime-env", type=Path, default=None, help="default: cluster/runtime_env.yaml")
    parser.add_argument("--job-id", default=None, help="a submission id (default: Ray's)")
    parser.add_argument("--follow", action="store_true", help="stream the job's logs while it runs")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and return at once")


def run(args: argparse.Namespace) -> int:
    from gemlab.jobs.client import (
        DEFAULT_RUNTIME_ENV,
        JobsError,
        client,
        entrypoint,
        follow_logs,
        load_runtime_env,
        wait,
    )

    try:
        jobs = client(args.address)
        runtime_env = load_runtime_env(args.runtime_env or DEFAULT_RUNTIME_ENV)
        job_id = jobs.submit_job(
            entrypoint=entrypoint(args.command, args.overrides),
            runtime_env=runtime_env,
            submission_id=args.job_id,
        )
    except JobsError as error:
        print(f"gemlab submit: error: {error}", file=sys.stderr)
        return 2
    print(f"submitted {job_id}", flush=True)
    if args.no_wait:
        return 0
    if args.follow:
        follow_logs(jobs, job_id)
    status = wait(jobs, job_id)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1
