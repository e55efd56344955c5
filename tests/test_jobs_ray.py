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
from pathlib import Path

import pytest

from gemlab.cli import main
from gemlab.jobs.client import client, wait

pytestmark = pytest.mark.ray


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def ray_head():
    """A head bound to 127.0.0.1 on free ports, in its own temp dir; stopped (with its jobs) at the end."""
    gcs, dashboard, client_port, agent = _free_ports(4)
    temp = tempfile.mkdtemp(prefix="gr", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # jobs run the `python` of this environment
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent}",
        "--num-cpus=4", f"--temp-dir={temp}", "--include-dashboard=true", "--disable-usage-stats",
    ]  # fmt: skip
    head = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or head.poll() is not None:
                head.kill()
                raise RuntimeError("the Ray head did not start") from None
            time.sleep(1)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield address
    head.terminate()  # `ray start --block` stops its cluster on SIGTERM; `ray stop` would stop every Ray here
    head.wait(timeout=60)
    shutil.rmtree(temp, ignore_errors=True)


def _job_id(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("submitted "))


def test_a_submitted_run_succeeds_writes_results_and_resumes_on_fewer_workers(ray_head, digits_dir, tmp_path, capsys):
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

    # the same run resubmitted on 1 worker instead of 2, with a larger budget: it continues from step 20
    more = [*common, "trainer.max_steps=30", "trainer.num_workers=1", "baselines=[]"]
    assert main(["submit", "--address", ray_head, "--follow", "train", *more]) == 0
    followed = capsys.readouterr().out
    assert "continuing from step 20" in followed and "[gem] step    30/30" in followed


def test_a_job_with_a_bad_override_fails_with_the_error_in_its_logs(ray_head, capsys):
    assert main(["submit", "--address", ray_head, "--no-wait", "train", "experiment=tiny", "moe.bogus=1"]) == 0
    job = _job_id(capsys.readouterr().out)
    assert wait(client(ray_head), job) == "FAILED"
    assert main(["jobs", "logs", job, "--address", ray_head]) == 0
    assert "moe.bogus" in capsys.readouterr().out
    assert main(["submit", "--address", ray_head, "train", "experiment=tiny", "moe.bogus=1"]) == 1
    assert "FAILED" in capsys.readouterr().out
