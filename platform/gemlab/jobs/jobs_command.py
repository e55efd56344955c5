"""``gemlab jobs``: the jobs of a Ray cluster.

    gemlab jobs list                    # id, status, entrypoint (credentials in URIs masked)
    gemlab jobs status raysubmit_...    # SUCCEEDED, FAILED, STOPPED, RUNNING or PENDING
    gemlab jobs logs raysubmit_... [--follow]
    gemlab jobs stop raysubmit_...

The address comes from ``--address`` or RAY_ADDRESS. No address, a job
server that does not answer and an unknown job id each end in one line,
``gemlab jobs: error: …``, and exit status 2.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "status", "logs", "stop"])
    parser.add_argument("job_id", nargs="?", help="the job (all but list)")
    parser.add_argument("--address", default=None, help="the job server, e.g. http://127.0.0.1:8265 (or RAY_ADDRESS)")
    parser.add_argument("--follow", action="store_true", help="logs: stream until the job ends")


def run(args: argparse.Namespace) -> int:
    """Do the action and print its answer; 0.

    Raises JobsError -- one line and exit 2 from gemlab's main -- for a
    missing (or, with list, an extra) job id, no or a malformed address, an
    unreachable job server or an unknown job.
    """
    from gemlab.jobs.client import JobsError, client, job_server_errors

    if (args.action == "list") != (args.job_id is None):
        wanted = "takes no job id" if args.action == "list" else f"needs a job id: gemlab jobs {args.action} JOB_ID"
        raise JobsError(f"{args.action} {wanted}")
    jobs = client(args.address)
    with job_server_errors():
        _ACTIONS[args.action](jobs, args)
    return 0


def _list(jobs, args: argparse.Namespace) -> None:
    from gemlab.jobs.client import job_lines

    for line in job_lines(jobs):
        print(line)


def _status(jobs, args: argparse.Namespace) -> None:
    from gemlab.jobs.client import explain_failure

    status = jobs.get_job_status(args.job_id).value
    print(status, flush=True)
    if status == "FAILED":
        explain_failure(jobs, args.job_id, args.prog)


def _logs(jobs, args: argparse.Namespace) -> None:
    from gemlab.jobs.client import follow_logs, job_logs

    if args.follow:
        follow_logs(jobs, args.job_id)
    else:
        print(job_logs(jobs, args.job_id), end="")


def _stop(jobs, args: argparse.Namespace) -> None:
    stopped = jobs.stop_job(args.job_id)
    print(f"{args.job_id}: {'stopping' if stopped else 'already ended'}")


_ACTIONS = {"list": _list, "status": _status, "logs": _logs, "stop": _stop}
