"""`gemlab submit` and `gemlab jobs` against a real Ray head started with `ray start --head` on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from gemlab.cli import main
from gemlab.engine.checkpoint import read_history
from gemlab.engine.resume import find_resume_point
from gemlab.jobs.client import client, load_runtime_env, wait
from gemlab.storage import Location

pytestmark = pytest.mark.ray


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _ray_start(*args: str) -> subprocess.Popen:
    """``ray start --block`` bound to 127.0.0.1; SIGTERM stops that node (``ray stop`` would stop every Ray here)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # jobs run the `python` of this environment
    ray = str(Path(sys.executable).parent / "ray")
    command = [ray, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _until(ready, what: str, processes: list[subprocess.Popen], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"{what} did not happen in {seconds:.0f} s")
        time.sleep(1)


def _answers(address: str) -> bool:
    try:
        urllib.request.urlopen(f"{address}/api/version", timeout=2)
        return True
    except OSError:
        return False


def _alive_nodes(address: str) -> int:
    from ray.util.state import list_nodes

    return sum(node.state == "ALIVE" for node in list_nodes(address=address))


def _stop(*nodes: subprocess.Popen) -> None:
    for node in reversed(nodes):
        node.terminate()
        node.wait(timeout=60)


@contextmanager
def _cluster(head_cpus: int, *worker_cpus: int):
    """A head (and worker nodes) on 127.0.0.1, free ports, its own temp dir: (dashboard address, worker nodes)."""
    gcs, dashboard, client_port, agent = _free_ports(4)
    temp = tempfile.mkdtemp(prefix="gr", dir="/tmp")  # short: Ray's socket paths live under it
    head = _ray_start(
        "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent}",
        f"--num-cpus={head_cpus}", f"--temp-dir={temp}", "--include-dashboard=true",
    )  # fmt: skip
    address, workers = f"http://127.0.0.1:{dashboard}", []
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        _until(lambda: _answers(address), "the Ray head answering", [head])
        for cpus in worker_cpus:  # a second raylet on this machine: a node of its own, with its own ports
            agent_port, metrics = _free_ports(2)
            ports = [f"--dashboard-agent-listen-port={agent_port}", f"--metrics-export-port={metrics}"]
            workers.append(_ray_start(f"--address=127.0.0.1:{gcs}", f"--num-cpus={cpus}", *ports))
        _until(lambda: _alive_nodes(address) == 1 + len(workers), "every node joining", [head, *workers])
        yield address, workers
    finally:
        _stop(head, *workers)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head():
    """A one-node cluster with 4 CPUs, stopped (with its jobs) at the end."""
    with _cluster(4) as (address, _):
        yield address


def _job_id(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("submitted "))


def test_a_submitted_run_succeeds_and_its_results_logs_and_status_are_read(ray_head, digits_dir, tmp_path, capsys):
    common = [f"data.path={digits_dir}", f"storage_path={tmp_path}", "experiment=quickstart"]
    assert main(["submit", "--address", ray_head, "train", *common, "trainer.max_steps=20"]) == 0
    output = capsys.readouterr().out
    job = _job_id(output)
    assert f"job {job}: SUCCEEDED" in output
    results = sorted(p.parent.name for p in tmp_path.glob("*/results.parquet"))
    assert [r.split("-")[:2] for r in results] == [["quickstart", "gem"], ["quickstart", "topk"]]
    assert main(["jobs", "logs", job, "--address", ray_head]) == 0
    logs = capsys.readouterr().out
    assert "per-domain accuracy" in logs and "[gem] step    20/20" in logs
    assert main(["jobs", "status", job, "--address", ray_head]) == 0
    assert capsys.readouterr().out.strip() == "SUCCEEDED"
    assert main(["jobs", "list", "--address", ray_head]) == 0
    assert job in capsys.readouterr().out


def test_a_job_with_a_bad_override_fails_with_the_error_in_its_logs_and_its_credentials_masked(ray_head, capsys):
    bad = ["train", "experiment=tiny", "moe.bogus=1", "storage_path='s3://KEY:SeCrEt-42@bucket/runs'"]
    assert main(["submit", "--address", ray_head, "--no-wait", *bad]) == 0
    job = _job_id(capsys.readouterr().out)
    assert wait(client(ray_head), job) == "FAILED"
    assert main(["jobs", "logs", job, "--address", ray_head]) == 0
    logs = capsys.readouterr().out
    assert "moe.bogus" in logs and "SeCrEt-42" not in logs
    assert main(["jobs", "list", "--address", ray_head]) == 0
    listed = capsys.readouterr().out
    assert job in listed and "s3://***@bucket/runs" in listed and "SeCrEt-42" not in listed
    assert main(["submit", "--address", ray_head, "--job-id", job, *bad]) == 2  # the server refuses a used id
    (refused,) = capsys.readouterr().err.splitlines()
    assert refused.startswith("gemlab submit: error: the job server answered ") and "already exists" in refused
    assert main(["jobs", "status", "raysubmit_nosuch", "--address", ray_head]) == 2
    (unknown,) = capsys.readouterr().err.splitlines()
    assert unknown == "gemlab jobs: error: the job server answered 404: Job raysubmit_nosuch does not exist"
    assert main(["submit", "--address", ray_head, "train", "experiment=tiny", "moe.bogus=1"]) == 1
    out, err = capsys.readouterr()
    assert "FAILED" in out and err == ""  # no missing module to name


def test_a_job_whose_python_cannot_import_gemlab_says_what_is_missing(ray_head, tmp_path, capsys):
    """The job's `python` is this environment's, isolated (-I -S): it sees neither shipped nor installed gemlab."""
    bare = tmp_path / "bin" / "python"
    bare.parent.mkdir()
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    bare.chmod(0o755)
    env = load_runtime_env()
    env["env_vars"]["PATH"] = f"{bare.parent}:{os.environ['PATH']}"
    runtime_env = tmp_path / "runtime_env.yaml"
    runtime_env.write_text(yaml.safe_dump(env))
    assert main(["submit", "--address", ray_head, "--runtime-env", str(runtime_env), "train", "experiment=tiny"]) == 1
    out, err = capsys.readouterr()
    job = _job_id(out)
    assert f"job {job}: FAILED" in out
    assert err.splitlines() == [
        f"gemlab submit: job {job}: the cluster's python cannot import gemlab: ship the repository with the runtime "
        "env (its PYTHONPATH=platform) or install gemlab in the nodes' image (cluster/README.md)"
    ]
    assert main(["jobs", "status", job, "--address", ray_head]) == 0
    assert capsys.readouterr().err.startswith(f"gemlab jobs: job {job}: the cluster's python cannot import gemlab")


def _checkpointed_step(run_root: Location) -> int:
    """The newest complete checkpoint's step of the one run under ``run_root``; 0 before there is one."""
    runs = run_root.folders("tiny-gem-")
    return find_resume_point(runs[0]).step if runs else 0


def test_a_run_stopped_mid_way_on_two_nodes_resumes_on_the_node_left(digits_dir, s3_uri, capsys):
    """One CPU per node, so the two workers span both nodes; the run lives in an object store both reach.

    The job is stopped while it trains (a budget it cannot reach in the test), the worker node leaves, and the
    run is resubmitted on the one node left with an elastic worker range: it continues from the checkpoint the
    stopped job left, not from scratch.
    """
    common = ["train", "experiment=tiny", f"data.path={digits_dir}", f"storage_path='{s3_uri}'"]
    runs = Location.parse(s3_uri)
    with _cluster(1, 1) as (address, (worker_node,)):
        first = [*common, "trainer.num_workers=2", "trainer.max_steps=100000"]
        assert main(["submit", "--address", address, "--no-wait", *first]) == 0
        job = _job_id(capsys.readouterr().out)
        _until(lambda: _checkpointed_step(runs) >= 6, "a second checkpoint", [], seconds=180)
        assert main(["jobs", "stop", job, "--address", address]) == 0
        assert wait(client(address), job) == "STOPPED"
        main(["jobs", "logs", job, "--address", address])
        assert "was stopped; its checkpoints are kept" in capsys.readouterr().out  # aborted, not killed
        stopped_at = _checkpointed_step(runs)
        _stop(worker_node)  # the node leaves; the head's single CPU is what is left
        _until(lambda: _alive_nodes(address) == 1, "the worker node leaving", [])
        rerun = [*common, "trainer.num_workers=[1,2]", f"trainer.max_steps={stopped_at + 3}"]
        assert main(["submit", "--address", address, "--follow", *rerun]) == 0
    followed = capsys.readouterr().out
    assert f"continuing from step {stopped_at}" in followed and f"step {stopped_at + 3:5d}/{stopped_at + 3}" in followed
    (run_dir,) = runs.folders("tiny-gem-")
    resume = find_resume_point(run_dir)
    step, checkpoint = resume.step, resume.folder
    assert step == stopped_at + 3
    assert [r["step"] for r in read_history(checkpoint)] == list(range(3, stopped_at + 4, 3))
