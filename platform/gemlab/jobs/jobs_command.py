"""``gemlab jobs``: the jobs of a Ray cluster.

    gemlab jobs list                    # id, status, entrypoint
    gemlab jobs status raysubmit_...    # SUCCEEDED, FAILED, STOPPED, RUNNING or PENDING
    gemlab jobs logs raysubmit_... [--follow]
    gemlab jobs stop raysubmit_...

The address comes from ``--address`` or RAY_ADDRESS.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "status", "logs", "stop"])
    parser.add_argument("job_id", nargs="?", help="the job (all but list)")
    parser.add_argument("--address", default=None, help="the job server, e.g. http://127.0.0.1:8265 (or RAY_ADDRESS)")
    parser.add_argument("--follow", action="store_true", help="logs: stream until the job ends")


def run(args: argparse.Namespace) -> int:
    from gemlab.jobs.client import JobsError, client, follow_logs

    if args.action != "list" and not args.job_id:
        print(f"gemlab jobs {args.action}: error: name the job id", file=sys.stderr)
        return 2
    try:
        jobs = client(args.address)
        if args.action == "list":
            for job in sorted(jobs.list_jobs(), key=lambda j: j.start_time or 0):
                print(f"{job.submission_id}  {job.status.value:<9}  {job.entrypoint}")
        elif args.action == "status":
            print(jobs.get_job_status(args.job_id).value)
        elif args.action == "logs":
            follow_logs(jobs, args.job_id) if args.follow else print(jobs.get_job_logs(args.job_id), end="")
        else:
            stopped = jobs.stop_job(args.job_id)
            print(f"{args.job_id}: {'stopping' if stopped else 'already ended'}")
    except JobsError as error:
        print(f"gemlab jobs: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # the SDK's error for an unknown job id or a server error
        print(f"gemlab jobs: error: {error}", file=sys.stderr)
        return 1
    return 0
